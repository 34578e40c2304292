use super::*;
use crate::image::import_rootfs;
use crate::layer::Compression;

fn rootfs_tar() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in [
        ("etc/hostname", &b"kiln\n"[..]),
        ("bin/tool", &[7u8; 70_000][..]),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o755);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, name, content).unwrap();
    }
    builder.into_inner().unwrap()
}

fn options() -> LayerOptions {
    LayerOptions {
        compression: Compression::Gzip(6),
        threads: 2,
    }
}

fn store_with_image() -> (tempfile::TempDir, Store, Image) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let tags = [Reference::parse("app:1").unwrap()];
    let image = import_rootfs(&store, &mut &rootfs_tar()[..], "-", &tags, options(), None).unwrap();
    (dir, store, image)
}

fn save_to_vec(store: &Store, image: &Image, format: ArchiveFormat) -> Vec<u8> {
    let items = [SaveItem {
        image: image.clone(),
        tags: vec![Reference::parse("app:1").unwrap()],
    }];
    let mut out = Vec::new();
    save(store, &items, format, &mut out).unwrap();
    out
}

fn entry_names(archive: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    for entry in tar::Archive::new(archive).entries().unwrap() {
        names.push(
            entry
                .unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
    }
    names
}

#[test]
fn docker_archive_roundtrip_keeps_digests() {
    let (_dir, store, image) = store_with_image();
    let archive = save_to_vec(&store, &image, ArchiveFormat::Docker);
    let diff = image.diff_ids().unwrap()[0].hex().to_string();
    assert_eq!(
        entry_names(&archive),
        vec![
            format!("{}.json", image.id.hex()),
            format!("{diff}/layer.tar"),
            "manifest.json".to_string(),
            "repositories".to_string()
        ]
    );
    // Deterministic: the same image saves to the same bytes.
    assert!(archive == save_to_vec(&store, &image, ArchiveFormat::Docker));

    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Store::open(fresh_dir.path()).unwrap();
    let loaded = load(&fresh, &mut &archive[..], options()).unwrap();
    assert_eq!(loaded.format, ArchiveFormat::Docker);
    assert_eq!(loaded.images.len(), 1);
    let copy = fresh.find_image("app:1").unwrap();
    assert_eq!(copy.id, image.id);
    assert_eq!(copy.manifest_digest, image.manifest_digest);
}

#[test]
fn oci_archive_roundtrip_keeps_digests() {
    let (_dir, store, image) = store_with_image();
    let archive = save_to_vec(&store, &image, ArchiveFormat::Oci);
    let names = entry_names(&archive);
    assert_eq!(names[0], "oci-layout");
    assert_eq!(names.last().unwrap(), "index.json");
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Store::open(fresh_dir.path()).unwrap();
    // Compressed archives are accepted too (`kiln save | gzip`).
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&archive).unwrap();
    let loaded = load(&fresh, &mut &gz.finish().unwrap()[..], options()).unwrap();
    assert_eq!(loaded.format, ArchiveFormat::Oci);
    let copy = fresh.find_image("app:1").unwrap();
    assert_eq!(copy.manifest_digest, image.manifest_digest);
    assert!(crate::gc::fsck(&fresh, false).unwrap().is_clean());
}

/// Builds a tar from (name, bytes) pairs, bypassing the tar crate's own path checks.
fn raw_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, content) in files {
        let mut header = tar::Header::new_ustar();
        header.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn load_err(archive: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let err = load(&store, &mut &archive[..], options())
        .unwrap_err()
        .to_string();
    assert!(crate::gc::fsck(&store, false).unwrap().is_clean());
    assert!(store.read_index().unwrap().manifests().is_empty());
    err
}

#[test]
fn paths_resolve_inside_the_archive_only() {
    assert_eq!(clean_path("./a//b/./c").unwrap(), "a/b/c");
    assert_eq!(clean_path("id/../digest.tar").unwrap(), "digest.tar");
    assert!(clean_path("a/../../b").is_err());
    assert!(clean_path("/etc/passwd").is_err());
}

#[test]
fn hostile_archives_are_refused() {
    let manifest = br#"[{"Config":"../../etc/passwd","RepoTags":["x:1"],"Layers":[]}]"#;
    let err = load_err(&raw_tar(&[("manifest.json", manifest)]));
    assert!(err.contains("'..'"), "{err}");

    let manifest = br#"[{"Config":"/etc/passwd","RepoTags":null,"Layers":[]}]"#;
    let err = load_err(&raw_tar(&[("manifest.json", manifest)]));
    assert!(err.contains("absolute"), "{err}");

    let err = load_err(&raw_tar(&[("../escape", b"x"), ("manifest.json", b"[]")]));
    assert!(err.contains("'..'"), "{err}");

    let err = load_err(&raw_tar(&[("hello", b"x")]));
    assert!(err.contains("not an image archive"), "{err}");

    let err = load_err(b"this is not a tar at all, not even close, just some text");
    assert!(err.contains("archive"), "{err}");
}

#[test]
fn digest_and_size_mismatches_are_refused() {
    let (_dir, store, image) = store_with_image();
    let archive = save_to_vec(&store, &image, ArchiveFormat::Oci);
    // Flip one byte inside the config blob's data.
    let mut tampered = archive.clone();
    let config_name = format!("blobs/sha256/{}", image.id.hex());
    let mut offset = 0;
    for entry in tar::Archive::new(&archive[..]).entries().unwrap() {
        let entry = entry.unwrap();
        if entry.path().unwrap().to_string_lossy() == config_name {
            offset = entry.raw_file_position() as usize;
        }
    }
    assert!(offset > 0);
    tampered[offset + 2] ^= 0x20;
    let err = load_err(&tampered);
    assert!(err.contains("does not match its digest"), "{err}");

    // A docker-archive whose layer is not the one its config names.
    let docker = save_to_vec(&store, &image, ArchiveFormat::Docker);
    let diff = image.diff_ids().unwrap()[0].hex().to_string();
    let config = store.read_blob(&image.id, None).unwrap();
    let manifest =
        format!(r#"[{{"Config":"c.json","RepoTags":["evil:1"],"Layers":["{diff}/layer.tar"]}}]"#);
    let other_layer = rootfs_tar()[..1024].to_vec();
    let forged = raw_tar(&[
        ("c.json", &config),
        (&format!("{diff}/layer.tar"), &other_layer),
        ("manifest.json", manifest.as_bytes()),
    ]);
    let err = load_err(&forged);
    assert!(err.contains("does not match the config"), "{err}");
    drop(docker);
}

#[test]
fn truncated_and_absurd_sizes_are_errors() {
    let (_dir, store, image) = store_with_image();
    let archive = save_to_vec(&store, &image, ArchiveFormat::Docker);
    let err = load_err(&archive[..archive.len() / 2]);
    assert!(
        err.contains("truncated") || err.contains("archive"),
        "{err}"
    );

    // A header claiming an enormous file followed by almost nothing.
    let mut header = tar::Header::new_ustar();
    header.set_path("manifest.json").unwrap();
    header.set_size(u64::MAX / 4);
    header.set_mode(0o644);
    header.set_cksum();
    let mut bogus = header.as_bytes().to_vec();
    bogus.extend_from_slice(&[b'['; 600]);
    let err = load_err(&bogus);
    assert!(err.contains("archive"), "{err}");
}

/// An oci-archive from raw parts: the blobs of `image` plus `extra` blobs and an index.json.
fn oci_archive_with(store: &Store, image: &Image, extra: &[Vec<u8>], index_json: &str) -> Vec<u8> {
    let mut files: Vec<(String, Vec<u8>)> = vec![(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    let mut blobs = vec![
        store.read_blob(&image.manifest_digest, None).unwrap(),
        store.read_blob(&image.id, None).unwrap(),
    ];
    for layer in image.layers().unwrap() {
        blobs.push(std::fs::read(store.blob_path(&layer.digest)).unwrap());
    }
    blobs.extend(extra.iter().cloned());
    for blob in blobs {
        files.push((format!("blobs/sha256/{}", Digest::of(&blob).hex()), blob));
    }
    files.push(("index.json".into(), index_json.as_bytes().to_vec()));
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), &b[..])).collect();
    raw_tar(&refs)
}

#[test]
fn multi_platform_index_loads_the_host_manifest() {
    let (_dir, store, image) = store_with_image();
    let (arch, _) = crate::config::host_platform();
    let manifest = format!(
        r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{}}}"#,
        image.manifest_digest, image.manifest_size
    );
    let absent = Digest::of(b"a manifest for another machine");
    let platform_index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{absent}","size":10,
              "platform":{{"architecture":"not-{arch}","os":"linux"}}}},
            {},
            "platform":{{"architecture":"{arch}","os":"linux"}}}}]}}"#,
        manifest.trim_end_matches('}'),
    );
    let index_blob = platform_index.into_bytes();
    let index_json = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json",
            "digest":"{}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"multi:1"}}}}]}}"#,
        Digest::of(&index_blob),
        index_blob.len()
    );
    let archive = oci_archive_with(&store, &image, &[index_blob], &index_json);
    let dir = tempfile::tempdir().unwrap();
    let fresh = Store::open(dir.path()).unwrap();
    load(&fresh, &mut &archive[..], options()).unwrap();
    let loaded = fresh.find_image("multi:1").unwrap();
    assert_eq!(loaded.manifest_digest, image.manifest_digest);
    assert!(!fresh.has_blob(&absent));
}

#[test]
fn absurd_descriptor_sizes_are_refused() {
    let (_dir, store, image) = store_with_image();
    let index_json = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "digest":"{}","size":4611686018427387904,
            "annotations":{{"org.opencontainers.image.ref.name":"big:1"}}}}]}}"#,
        image.manifest_digest
    );
    let archive = oci_archive_with(&store, &image, &[], &index_json);
    let err = load_err(&archive);
    assert!(err.contains("described as 4611686018427387904"), "{err}");
}

#[test]
fn loading_known_layers_reuses_their_blobs() {
    let (_dir, store, image) = store_with_image();
    let archive = save_to_vec(&store, &image, ArchiveFormat::Docker);
    let before = store.list_blobs().unwrap();
    // zstd here would give a new blob if the layer were recompressed.
    let zstd = LayerOptions {
        compression: Compression::Zstd(3),
        threads: 1,
    };
    load(&store, &mut &archive[..], zstd).unwrap();
    assert_eq!(store.list_blobs().unwrap(), before);
    assert_eq!(
        store.find_image("app:1").unwrap().manifest_digest,
        image.manifest_digest
    );
}

/// skopeo writes each layer once as `<digest>.tar` and links `<id>/layer.tar` to it.
#[test]
fn symlinked_layers_in_docker_archives_load() {
    let (_dir, store, image) = store_with_image();
    let config = store.read_blob(&image.id, None).unwrap();
    let tar = rootfs_tar();
    let diff = image.diff_ids().unwrap()[0].hex().to_string();
    let manifest = format!(
        r#"[{{"Config":"{}.json","RepoTags":["linked:1"],"Layers":["abc/layer.tar"]}}]"#,
        image.id.hex()
    );
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, data).unwrap();
    };
    add(&format!("{diff}.tar"), &tar);
    add(&format!("{}.json", image.id.hex()), &config);
    add("manifest.json", manifest.as_bytes());
    let mut link = tar::Header::new_ustar();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    builder
        .append_link(&mut link, "abc/layer.tar", format!("../{diff}.tar"))
        .unwrap();
    let archive = builder.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fresh = Store::open(dir.path()).unwrap();
    let loaded = load(&fresh, &mut &archive[..], options()).unwrap();
    assert_eq!(loaded.images[0].tags, vec!["linked:1".to_string()]);
    assert_eq!(fresh.find_image("linked:1").unwrap().id, image.id);
}
