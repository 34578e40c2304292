use super::*;
use kiln_oci::{ImageConfig, LayerOptions, LayerWriter};
use std::collections::BTreeSet;
use std::io::Read;

#[test]
fn specs_read_like_buildx() {
    let parse = |s: &str| Output::parse(s).unwrap_or_else(|e| panic!("{s}: {}", e.render()));
    assert_eq!(parse("out"), Output::Local("out".into()));
    assert_eq!(parse("-"), Output::Tar(Dest::Stdout));
    assert_eq!(parse("type=local,dest=a/b"), Output::Local("a/b".into()));
    assert_eq!(
        parse("type=tar,dest=r.tar"),
        Output::Tar(Dest::File("r.tar".into()))
    );
    assert_eq!(
        parse("type=docker,dest=-,name=app:1"),
        Output::Archive {
            format: ArchiveFormat::Docker,
            dest: Dest::Stdout,
            names: vec![Reference::parse("app:1").unwrap_or_else(|e| panic!("{e}"))],
        }
    );
    assert!(matches!(
        parse("type=oci,dest=i.tar"),
        Output::Archive {
            format: ArchiveFormat::Oci,
            ..
        }
    ));
    assert_eq!(parse("type=image"), Output::Image { names: vec![] });
    let reference = |r: &str| Reference::parse(r).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        parse(r#"type=image,"name=a:1,b""#),
        Output::Image {
            names: vec![reference("a:1"), reference("b:latest")]
        }
    );
    assert!(parse("type=oci,dest=-").writes_stdout());
    assert!(!parse("type=local,dest=x").writes_stdout());
}

#[test]
fn bad_specs_are_usage_errors() {
    for spec in [
        "",
        "type=local",
        "type=local,dest=-",
        "type=zip,dest=x",
        "dest=x",
        "type=tar,dest=x,name=a",
        "type=tar,dest=x,color=red",
        "type=oci,dest",
        "type=registry,dest=x",
        "type=image,push=maybe",
    ] {
        match Output::parse(spec) {
            Err(CliError::Usage { .. }) => {}
            other => panic!("{spec:?}: {other:?}"),
        }
    }
}

#[test]
fn registry_outputs_push_their_names() {
    let parse = |s: &str| Output::parse(s).unwrap_or_else(|e| panic!("{s}: {}", e.render()));
    let app = Reference::parse("localhost:5000/app:1").unwrap();
    for spec in [
        "type=registry,name=localhost:5000/app:1",
        "type=image,name=localhost:5000/app:1,push=true",
    ] {
        let output = parse(spec);
        assert_eq!(
            output,
            Output::Registry {
                names: vec![app.clone()]
            },
            "{spec}"
        );
        assert_eq!(output.image_names(), std::slice::from_ref(&app));
    }
    assert_eq!(
        parse("type=image,push=false"),
        Output::Image { names: vec![] }
    );
    let unnamed = [parse("type=registry")];
    assert!(matches!(
        check_push(&unnamed, &[]),
        Err(CliError::Usage { .. })
    ));
    assert!(check_push(&unnamed, std::slice::from_ref(&app)).is_ok());
}

#[test]
fn two_outputs_on_stdout_are_refused() {
    let outputs = [Output::Tar(Dest::Stdout), Output::Tar(Dest::Stdout)];
    assert!(matches!(check_all(&outputs), Err(CliError::Usage { .. })));
}

/// A two-layer image: the base has `bin/tool`, `etc/old` and `etc/keep`; the top layer removes
/// `etc/old` with a whiteout and adds `etc/new`.
fn two_layer_image(store: &Store, dir: &Path) -> Image {
    let base = dir.join("base");
    std::fs::create_dir_all(base.join("bin")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(base.join("etc")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(base.join("bin/tool"), b"#!/bin/sh\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(base.join("etc/old"), b"old").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(base.join("etc/keep"), b"keep").unwrap_or_else(|e| panic!("{e}"));
    let mut writer =
        LayerWriter::new(store, LayerOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    write_tree(&base, &mut writer, &DiffOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let first = writer.finish().unwrap_or_else(|e| panic!("{e}"));

    let mut top = tar::Builder::new(Vec::new());
    for (name, data) in [("etc/.wh.old", &b""[..]), ("etc/new", &b"new"[..])] {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        top.append_data(&mut header, name, data)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let top = top.into_inner().unwrap_or_else(|e| panic!("{e}"));
    let mut writer =
        LayerWriter::new(store, LayerOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    writer.write_all(&top).unwrap_or_else(|e| panic!("{e}"));
    let second = writer.finish().unwrap_or_else(|e| panic!("{e}"));
    let tag = Reference::parse("layers:1").unwrap_or_else(|e| panic!("{e}"));
    store
        .write_image(&ImageConfig::for_host(), &[first, second], &[tag])
        .unwrap_or_else(|e| panic!("{e}"))
}

fn tar_names(bytes: &[u8]) -> BTreeSet<String> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|entry| {
            let entry = entry.unwrap_or_else(|e| panic!("{e}"));
            let path = entry.path().unwrap_or_else(|e| panic!("{e}"));
            path.to_string_lossy().trim_end_matches('/').to_string()
        })
        .collect()
}

#[test]
fn local_and_tar_outputs_hold_the_flattened_tree() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path().join("store")).unwrap_or_else(|e| panic!("{e}"));
    let image = two_layer_image(&store, dir.path());
    let progress = crate::progress::Progress::new(Box::new(crate::progress::Quiet));

    let out = dir.path().join("out");
    let local = Output::Local(out.clone());
    local
        .export(&store, &image, &[], &progress.step(local.title()))
        .unwrap_or_else(|e| panic!("{}", e.render()));
    assert!(out.join("bin/tool").is_file());
    assert!(out.join("etc/keep").is_file());
    assert_eq!(
        std::fs::read(out.join("etc/new")).ok(),
        Some(b"new".to_vec())
    );
    assert!(
        !out.join("etc/old").exists(),
        "the whiteout deletes etc/old"
    );

    let tar_path = dir.path().join("rootfs.tar");
    let mut tars = Vec::new();
    for _ in 0..2 {
        let tar = Output::Tar(Dest::File(tar_path.clone()));
        tar.export(&store, &image, &[], &progress.step(tar.title()))
            .unwrap_or_else(|e| panic!("{}", e.render()));
        tars.push(std::fs::read(&tar_path).unwrap_or_else(|e| panic!("{e}")));
    }
    assert_eq!(tars[0], tars[1], "the tar output is deterministic");
    let names = tar_names(&tars[0]);
    for want in ["bin", "bin/tool", "etc", "etc/keep", "etc/new"] {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("old")), "{names:?}");
    // The scratch tree is gone with the export.
    let left: Vec<_> = std::fs::read_dir(store.tmp_dir())
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rootfs-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn archives_load_back_as_the_same_image() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(dir.path().join("store")).unwrap_or_else(|e| panic!("{e}"));
    let image = two_layer_image(&store, dir.path());
    let progress = crate::progress::Progress::new(Box::new(crate::progress::Quiet));
    let tag = Reference::parse("exported:2").unwrap_or_else(|e| panic!("{e}"));
    for (n, format) in [ArchiveFormat::Oci, ArchiveFormat::Docker]
        .into_iter()
        .enumerate()
    {
        let path = dir.path().join(format!("image-{n}.tar"));
        let output = Output::Archive {
            format,
            dest: Dest::File(path.clone()),
            names: Vec::new(),
        };
        output
            .export(
                &store,
                &image,
                std::slice::from_ref(&tag),
                &progress.step(output.title()),
            )
            .unwrap_or_else(|e| panic!("{}", e.render()));
        let fresh =
            Store::open(dir.path().join(format!("fresh-{n}"))).unwrap_or_else(|e| panic!("{e}"));
        let mut file = File::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut input: &mut dyn Read = &mut file;
        let loaded = archive::load(&fresh, &mut input, LayerOptions::default())
            .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(loaded.images.len(), 1);
        assert_eq!(loaded.images[0].image.id, image.id, "{format:?}");
        assert_eq!(
            fresh.find_image("exported:2").map(|i| i.id).ok(),
            Some(image.id.clone()),
            "{format:?}"
        );
    }
}

#[test]
fn atomic_writes_leave_nothing_behind_on_failure() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("iid");
    write_file_atomically(&path, |out| {
        out.write_all(b"sha256:1")
            .map_err(|e| CliError::io("test", e))
    })
    .unwrap_or_else(|e| panic!("{}", e.render()));
    let failed = write_file_atomically(&path, |out| {
        out.write_all(b"partial")
            .map_err(|e| CliError::io("test", e))?;
        Err(CliError::usage("stopped"))
    });
    assert!(failed.is_err());
    assert_eq!(std::fs::read(&path).ok(), Some(b"sha256:1".to_vec()));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("iid")]);
}
