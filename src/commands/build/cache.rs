//! `--cache-from` and `--cache-to`, read as buildx reads them, and the export that runs once the
//! image is built.
//!
//! | spec | meaning |
//! |---|---|
//! | `type=local,dest=DIR[,tag=T][,mode=min\|max][,ignore-error=true]` | export to an OCI layout |
//! | `type=local,src=DIR[,tag=T]` | import from one |
//! | `type=registry,ref=REF[,mode=min\|max][,ignore-error=true]` | a registry repository |
//! | `REF` | short for `type=registry,ref=REF` |
//!
//! An import that cannot be read is a warning (the build goes on without it); an export that
//! fails fails the build unless `ignore-error=true`, as in BuildKit.

use super::output::csv_fields;
use crate::error::{CliError, CliResult};
use crate::progress::Progress;
use kiln_builder::events::{Event, EventSink};
use kiln_builder::remote_cache::{
    CacheExport, CacheLocation, CacheMode, ExportableCache, export, open_transport,
};
use kiln_oci::Reference;
use kiln_oci::transport::CacheTransport;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// BuildKit options kiln accepts and has no use for: kiln always writes OCI media types in
/// one image manifest, and sends layers as the store holds them.
const IGNORED: &[&str] = &[
    "oci-mediatypes",
    "image-manifest",
    "compression",
    "compression-level",
    "force-compression",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    From,
    To,
}

impl Direction {
    fn flag(self) -> &'static str {
        match self {
            Direction::From => "--cache-from",
            Direction::To => "--cache-to",
        }
    }

    fn local_key(self) -> &'static str {
        match self {
            Direction::From => "src",
            Direction::To => "dest",
        }
    }
}

/// One `--cache-from`.
pub fn import_spec(spec: &str) -> CliResult<CacheLocation> {
    parse(spec, Direction::From).map(|export| export.location)
}

/// One `--cache-to`.
pub fn export_spec(spec: &str) -> CliResult<CacheExport> {
    parse(spec, Direction::To)
}

fn parse(spec: &str, direction: Direction) -> CliResult<CacheExport> {
    let flag = direction.flag();
    let local = direction.local_key();
    let hint = format!("write {flag} type=local,{local}=DIR or {flag} type=registry,ref=NAME:TAG");
    let bad = |why: String| CliError::Usage {
        message: format!("invalid {flag} {spec:?}: {why}"),
        hint: Some(hint.clone()),
    };
    if spec.trim().is_empty() {
        return Err(bad("it is empty".into()));
    }
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    if spec.contains('=') {
        for field in csv_fields(spec) {
            let Some((key, value)) = field.split_once('=') else {
                return Err(bad(format!("{field:?} is not KEY=VALUE")));
            };
            fields.insert(key.trim().to_ascii_lowercase(), value.to_string());
        }
    } else {
        // buildx's shorthand: a bare value is a registry reference.
        fields.insert("type".into(), "registry".into());
        fields.insert("ref".into(), spec.to_string());
    }
    let kind = fields
        .remove("type")
        .ok_or_else(|| bad("it has no type=".into()))?;
    let mode = match (fields.remove("mode").as_deref(), direction) {
        (None, _) => CacheMode::Min,
        (Some("min"), Direction::To) => CacheMode::Min,
        (Some("max"), Direction::To) => CacheMode::Max,
        (Some(other), Direction::To) => {
            return Err(bad(format!("mode={other}: the modes are min and max")));
        }
        (Some(_), Direction::From) => {
            return Err(bad("mode= applies to --cache-to only".into()));
        }
    };
    let ignore_error = match (fields.remove("ignore-error").as_deref(), direction) {
        (None, _) | (Some("false"), Direction::To) => false,
        (Some("true"), Direction::To) => true,
        (Some(other), Direction::To) => {
            return Err(bad(format!("ignore-error={other}: write true or false")));
        }
        (Some(_), Direction::From) => {
            return Err(bad("ignore-error= applies to --cache-to only".into()));
        }
    };
    fields.retain(|key, _| !IGNORED.contains(&key.as_str()));
    let location = match kind.trim() {
        "local" => {
            let dir = fields
                .remove(local)
                .filter(|d| !d.is_empty())
                .ok_or_else(|| bad(format!("type=local needs {local}=DIR")))?;
            let tag = fields.remove("tag").unwrap_or_else(|| "latest".into());
            if tag.is_empty() {
                return Err(bad("tag= is empty".into()));
            }
            CacheLocation::Local {
                dir: PathBuf::from(dir),
                tag,
            }
        }
        "registry" => {
            let reference = fields
                .remove("ref")
                .filter(|r| !r.is_empty())
                .ok_or_else(|| bad("type=registry needs ref=NAME[:TAG]".into()))?;
            let reference = Reference::parse(&reference)
                .map_err(|e| bad(e.to_string()))?
                .with_default_tag();
            CacheLocation::Registry {
                reference: reference.to_string(),
            }
        }
        other => {
            return Err(CliError::Unsupported {
                message: format!(
                    "{flag} type={other}: kiln keeps build cache only in local directories and registries"
                ),
                hint: Some(hint.clone()),
            });
        }
    };
    if let Some(key) = fields.keys().next() {
        return Err(bad(format!("kiln does not know the option {key:?}")));
    }
    Ok(CacheExport {
        location,
        mode,
        ignore_error,
    })
}

/// A `--cache-to` with its transport, opened before the build.
pub struct Exporter {
    export: CacheExport,
    transport: Box<dyn CacheTransport>,
}

/// Opens the transport of every `--cache-to` before anything is built, so a destination kiln
/// cannot write to costs no build. One that cannot be opened fails the command, unless it
/// says `ignore-error=true` (then it is left out, with a warning).
pub fn open_exports(
    exports: Vec<CacheExport>,
    registry: &kiln_oci::registry::RegistryConfig,
) -> CliResult<Vec<Exporter>> {
    let mut out = Vec::new();
    for export in exports {
        match open_transport(&export.location, registry) {
            Ok(transport) => out.push(Exporter { export, transport }),
            Err(e) if export.ignore_error => {
                eprintln!(
                    "warning: --cache-to {}: {e}; not exporting to it",
                    export.location
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Exports the build's cache to every destination, each as a step of the progress display.
pub fn export_all(
    store: &kiln_oci::Store,
    cache: &ExportableCache,
    exporters: &[Exporter],
    progress: &Progress,
) -> CliResult<()> {
    for Exporter {
        export: spec,
        transport,
    } in exporters
    {
        let step = progress.step(format!("exporting cache to {}", spec.location));
        let records = cache.records(spec.mode);
        match export(store, transport.as_ref(), records, &mut |line| {
            step.log(line)
        }) {
            Ok(_) => step.done(),
            Err(e) if spec.ignore_error => {
                step.done();
                progress.emit(Event::Warning {
                    message: format!("exporting cache to {} failed: {e}", spec.location),
                });
            }
            Err(e) => {
                step.failed(e.to_string());
                return Err(e.into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildx_specs_parse() {
        let to = export_spec("type=local,dest=/tmp/c,mode=max").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            to,
            CacheExport {
                location: CacheLocation::Local {
                    dir: "/tmp/c".into(),
                    tag: "latest".into()
                },
                mode: CacheMode::Max,
                ignore_error: false,
            }
        );
        let to = export_spec("type=registry,ref=example.com/app:cache,ignore-error=true,oci-mediatypes=true,image-manifest=true")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(to.mode, CacheMode::Min);
        assert!(to.ignore_error);
        assert_eq!(
            to.location,
            CacheLocation::Registry {
                reference: "example.com/app:cache".into()
            }
        );
        assert_eq!(
            import_spec("example.com/app").ok(),
            Some(CacheLocation::Registry {
                reference: "example.com/app:latest".into()
            })
        );
        assert_eq!(
            import_spec("type=local,src=c,tag=v1").ok(),
            Some(CacheLocation::Local {
                dir: "c".into(),
                tag: "v1".into()
            })
        );
    }

    #[test]
    fn bad_specs_are_usage_errors() {
        for spec in [
            "",
            "type=local",
            "type=local,src=c",
            "dest=c",
            "type=local,dest=c,mode=all",
            "type=local,dest=c,colour=blue",
            "type=registry",
            "type=registry,ref=bad ref!",
        ] {
            assert!(
                matches!(export_spec(spec), Err(CliError::Usage { .. })),
                "{spec}"
            );
        }
        assert!(matches!(
            import_spec("type=local,src=c,mode=max"),
            Err(CliError::Usage { .. })
        ));
        assert!(matches!(
            export_spec("type=gha"),
            Err(CliError::Unsupported { .. })
        ));
    }
}
