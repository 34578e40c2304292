//! `kiln-snapshotter`: layer directories, overlay snapshots, root-confined layer extraction and
//! upperdir → OCI layer diffs. Knows nothing of Dockerfiles.
