//! `-o/--output`: where a built image goes besides the store, with buildx's syntax:
//!
//! | spec | result |
//! |---|---|
//! | `type=image[,name=N]` (the default) | the store only (`name=` adds tags) |
//! | `type=local,dest=DIR`, or just `DIR` | the image's root filesystem, flattened into DIR |
//! | `type=tar,dest=FILE\|-`, or just `-` | the same as a deterministic tar |
//! | `type=oci,dest=FILE\|-[,name=N]` | an oci-archive |
//! | `type=docker,dest=FILE\|-[,name=N]` | a docker-archive (`docker load` reads it) |
//! | `type=registry[,name=N]`, `type=image,push=true`, `--push` | the store, then pushed to N (or every `-t` name) |
//!
//! Everything here works on any image in the store, not only a fresh build.

use super::scratch::Scratch;
use crate::error::{CliError, CliResult};
use crate::progress::Step;
use kiln_oci::archive::{self, ArchiveFormat, SaveItem};
use kiln_oci::{Image, Reference, Store, open_layer_blob};
use kiln_snapshotter::{ApplyOptions, DiffOptions, WhiteoutMode, apply_layer, write_tree};
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

/// One `--output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The store (always written); `name=` values tag the image too.
    Image {
        names: Vec<Reference>,
    },
    Local(PathBuf),
    Tar(Dest),
    Archive {
        format: ArchiveFormat,
        dest: Dest,
        names: Vec<Reference>,
    },
    /// The store, then the registry: each name (or, without any, each tag of the build) is
    /// pushed.
    Registry {
        names: Vec<Reference>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Stdout,
    File(PathBuf),
}

impl Dest {
    fn parse(value: &str) -> Dest {
        if value == "-" {
            Dest::Stdout
        } else {
            Dest::File(PathBuf::from(value))
        }
    }
}

impl Output {
    /// Reads one `--output` value.
    pub fn parse(spec: &str) -> CliResult<Output> {
        if spec.is_empty() {
            return Err(bad(spec, "it is empty", "write -o type=local,dest=DIR"));
        }
        // buildx's shorthands: a bare path is a local directory, `-` a tar on stdout.
        if !spec.contains('=') {
            return Ok(if spec == "-" {
                Output::Tar(Dest::Stdout)
            } else {
                Output::Local(PathBuf::from(spec))
            });
        }
        let mut kind = None;
        let mut dest = None;
        let mut names = Vec::new();
        let mut push = false;
        for field in csv_fields(spec) {
            let Some((key, value)) = field.split_once('=') else {
                return Err(bad(spec, &format!("{field:?} is not KEY=VALUE"), HINT));
            };
            match key.trim() {
                "type" => kind = Some(value.trim().to_string()),
                "dest" => dest = Some(value.to_string()),
                "name" => {
                    for name in value.split(',').filter(|n| !n.is_empty()) {
                        names.push(
                            Reference::parse(name)
                                .map_err(|e| bad(spec, &e.to_string(), HINT))?
                                .with_default_tag(),
                        );
                    }
                }
                "push" => {
                    push = match value.trim() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad(spec, "push= is true or false", HINT)),
                    }
                }
                other => {
                    return Err(bad(
                        spec,
                        &format!("kiln does not know the option {other:?}"),
                        "the options are type, dest, name and push",
                    ));
                }
            }
        }
        let kind = kind.ok_or_else(|| bad(spec, "it has no type=", HINT))?;
        let kind = kind.as_str();
        let dest = dest.as_deref();
        let need_dest = |kind: &str| {
            dest.ok_or_else(|| {
                bad(
                    spec,
                    &format!("type={kind} needs dest="),
                    "add dest=PATH, or dest=- for stdout",
                )
            })
        };
        let no_names = |kind: &str| -> CliResult<()> {
            if names.is_empty() {
                Ok(())
            } else {
                Err(bad(
                    spec,
                    &format!("type={kind} takes no name="),
                    "name= applies to type=image, oci and docker",
                ))
            }
        };
        match kind {
            "image" => {
                if dest.is_some() {
                    return Err(bad(spec, "type=image takes no dest=", HINT));
                }
                if push {
                    return Ok(Output::Registry { names });
                }
                Ok(Output::Image { names })
            }
            "local" => {
                no_names(kind)?;
                match need_dest(kind)? {
                    "-" => Err(bad(
                        spec,
                        "a directory cannot go to stdout",
                        "use type=tar,dest=- for a tar on stdout",
                    )),
                    dir => Ok(Output::Local(PathBuf::from(dir))),
                }
            }
            "tar" => {
                no_names(kind)?;
                Ok(Output::Tar(Dest::parse(need_dest(kind)?)))
            }
            "oci" | "docker" => Ok(Output::Archive {
                format: if kind == "oci" {
                    ArchiveFormat::Oci
                } else {
                    ArchiveFormat::Docker
                },
                dest: Dest::parse(need_dest(kind)?),
                names,
            }),
            "registry" => {
                if dest.is_some() {
                    return Err(bad(spec, "type=registry takes no dest=", HINT));
                }
                Ok(Output::Registry { names })
            }
            other => Err(bad(
                spec,
                &format!("unknown type {other:?}"),
                "use type=image, registry, local, tar, oci or docker",
            )),
        }
    }

    pub fn writes_stdout(&self) -> bool {
        matches!(
            self,
            Output::Tar(Dest::Stdout)
                | Output::Archive {
                    dest: Dest::Stdout,
                    ..
                }
        )
    }

    /// Tags that `type=image,name=…` adds to the build's own.
    pub fn image_names(&self) -> &[Reference] {
        match self {
            Output::Image { names } | Output::Registry { names } => names,
            _ => &[],
        }
    }

    /// The progress line of this export, as BuildKit words it.
    pub fn title(&self) -> String {
        match self {
            Output::Image { .. } => "exporting to image".into(),
            Output::Registry { .. } => "pushing to registry".into(),
            Output::Local(dir) => format!("exporting to client directory {}", dir.display()),
            Output::Tar(dest) => format!("exporting to client tarball {}", dest_name(dest)),
            Output::Archive { format, dest, .. } => format!(
                "exporting to {} image format {}",
                match format {
                    ArchiveFormat::Oci => "oci",
                    ArchiveFormat::Docker => "docker",
                },
                dest_name(dest)
            ),
        }
    }

    /// Writes `image` to this output. `tags` name it in archives without their own `name=`.
    pub fn export(
        &self,
        store: &Store,
        image: &Image,
        tags: &[Reference],
        step: &Step<'_>,
    ) -> CliResult<()> {
        match self {
            // Pushing needs the registry settings: `kiln build` does it (`registry::push_output`).
            Output::Image { .. } | Output::Registry { .. } => Ok(()),
            Output::Local(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| CliError::io(dir, e))?;
                flatten(store, image, dir)?;
                step.log(format!("copied the root filesystem to {}", dir.display()));
                Ok(())
            }
            Output::Tar(dest) => {
                let tree = Scratch::new(store, "rootfs-")?;
                flatten(store, image, tree.path())?;
                write_to(dest, |out| {
                    write_tree(tree.path(), out, &DiffOptions::default())?;
                    Ok(())
                })?;
                step.log(format!("wrote {}", dest_name(dest)));
                Ok(())
            }
            Output::Archive {
                format,
                dest,
                names,
            } => {
                let item = SaveItem {
                    image: image.clone(),
                    tags: if names.is_empty() {
                        tags.to_vec()
                    } else {
                        names.clone()
                    },
                };
                write_to(dest, |out| {
                    archive::save(store, std::slice::from_ref(&item), *format, out)?;
                    Ok(())
                })?;
                step.log(format!(
                    "wrote {} ({})",
                    dest_name(dest),
                    image.manifest_digest
                ));
                Ok(())
            }
        }
    }
}

/// The fields of a buildx-style CSV value: split at commas, except inside double quotes
/// (`name="app:1,app:latest"`), with the quotes removed.
pub(super) fn csv_fields(spec: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    for c in spec.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => {
                if let Some(field) = fields.last_mut() {
                    field.push(c);
                }
            }
        }
    }
    fields
}

const HINT: &str = "write -o type=local,dest=DIR (or type=tar|oci|docker,dest=FILE|-)";

fn bad(spec: &str, why: &str, hint: &str) -> CliError {
    CliError::Usage {
        message: format!("invalid --output {spec:?}: {why}"),
        hint: Some(hint.into()),
    }
}

/// A push needs somewhere to go: a `name=` or a `-t`.
pub fn check_push(outputs: &[Output], tags: &[Reference]) -> CliResult<()> {
    let unnamed = outputs
        .iter()
        .any(|o| matches!(o, Output::Registry { names } if names.is_empty()));
    if unnamed && tags.is_empty() {
        return Err(CliError::Usage {
            message: "--push (type=registry) needs a name to push to".into(),
            hint: Some(
                "add -t REGISTRY/NAME:TAG, or -o type=registry,name=REGISTRY/NAME:TAG".into(),
            ),
        });
    }
    Ok(())
}

fn dest_name(dest: &Dest) -> String {
    match dest {
        Dest::Stdout => "to stdout".into(),
        Dest::File(path) => path.display().to_string(),
    }
}

/// Checks what can be checked before building: at most one output on stdout, and stdout not a
/// terminal when one does.
pub fn check_all(outputs: &[Output]) -> CliResult<()> {
    let on_stdout = outputs.iter().filter(|o| o.writes_stdout()).count();
    if on_stdout > 1 {
        return Err(CliError::Usage {
            message: "only one --output can write to stdout (dest=-)".into(),
            hint: Some("give the others dest=FILE".into()),
        });
    }
    if on_stdout == 1 && io::stdout().is_terminal() {
        return Err(CliError::Usage {
            message: "refusing to write an archive to a terminal (dest=-)".into(),
            hint: Some("redirect stdout to a file or a pipe, or use dest=FILE".into()),
        });
    }
    Ok(())
}

/// Applies every layer of `image` onto `dir`, bottom first, deleting what whiteouts delete: the
/// root filesystem a container of the image would see.
pub fn flatten(store: &Store, image: &Image, dir: &Path) -> CliResult<()> {
    let options = ApplyOptions::new(WhiteoutMode::Delete);
    for layer in image.layers()? {
        let mut reader = open_layer_blob(store, &layer.digest)?;
        apply_layer(&mut reader, dir, &options)?;
        // The tar reader stops at the end-of-archive marker; reading to the end of the blob
        // is what checks its digest.
        io::copy(&mut reader, &mut io::sink())
            .map_err(|e| CliError::io(format!("layer {}", layer.digest), e))?;
    }
    Ok(())
}

/// Runs `write` against `dest`: stdout, or a file written beside its final name and renamed
/// into place, so that a failed export never leaves a truncated file under that name.
pub fn write_to(dest: &Dest, write: impl FnOnce(&mut dyn Write) -> CliResult<()>) -> CliResult<()> {
    match dest {
        Dest::Stdout => {
            let mut out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
            write(&mut out)?;
            out.flush().map_err(|e| CliError::io("<stdout>", e))
        }
        Dest::File(path) => write_file_atomically(path, write),
    }
}

/// Writes `path` through a temporary file in the same directory and renames it into place.
pub fn write_file_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> CliResult<()>,
) -> CliResult<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| CliError::usage(format!("{}: not a file name", path.display())))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| CliError::io(dir, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, tmp);
    write(&mut out)?;
    let tmp = out
        .into_inner()
        .map_err(|e| CliError::io(path, e.into_error()))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| CliError::io(path, e))?;
    // A temp file is created 0600; the result should be as readable as any file we create.
    set_default_mode(tmp.as_file()).map_err(|e| CliError::io(path, e))?;
    tmp.persist(path).map_err(|e| CliError::io(path, e.error))?;
    Ok(())
}

/// Gives `file` the mode a newly created file gets under the current umask (0666 & !umask).
fn set_default_mode(file: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // The umask can only be read by setting it; read it from /proc instead where possible.
    let umask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022);
    file.set_permissions(std::fs::Permissions::from_mode(0o666 & !umask))
}

#[cfg(test)]
mod tests;
