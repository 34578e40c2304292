//! `kiln-oci`: the content store (an OCI image layout), image types with canonical JSON, the layer
//! writer, archives and the registry client. Knows nothing of Dockerfiles or namespaces.
