//! The build context and the Dockerfile, as `docker build` takes them: a context directory with
//! `-f FILE`, `-f -` (the Dockerfile on stdin) or `CONTEXT/Dockerfile`; or `-`, the context as a
//! tar on stdin (plain, gzip or zstd), with its `Dockerfile` or the file `-f` names inside it —
//! and if stdin holds no tar but text, that text is the Dockerfile and the context is empty.

use super::scratch::Scratch;
use crate::commands::dockerfile::{self, Source};
use crate::error::{CliError, CliResult};
use kiln_oci::Store;
use kiln_snapshotter::{ApplyOptions, WhiteoutMode, apply_layer};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// A context directory and the Dockerfile to build with it.
pub struct Context {
    pub dir: PathBuf,
    pub dockerfile: Source,
    /// Where the Dockerfile lives, when it is a file (its `.dockerignore` beside it applies).
    pub dockerfile_path: Option<PathBuf>,
    /// The unpacked stdin context, removed with this value.
    _scratch: Option<Scratch>,
}

/// Reads the context and Dockerfile named by the `CONTEXT` argument and `-f`.
pub fn prepare(store: &Store, context: &str, file: Option<&str>) -> CliResult<Context> {
    if context == "-" {
        return from_stdin(store, file);
    }
    let dir = PathBuf::from(context);
    if !dir.is_dir() {
        return Err(CliError::Usage {
            message: format!("build context {context:?} is not a directory"),
            hint: Some("pass the directory holding your sources, for example `.`".into()),
        });
    }
    let (dockerfile, dockerfile_path) = match file {
        Some("-") => (dockerfile::read("-")?, None),
        // Relative to the working directory, like docker.
        Some(path) => (dockerfile::read(path)?, Some(PathBuf::from(path))),
        None => {
            let path = default_dockerfile(&dir);
            (dockerfile::read(&path.to_string_lossy())?, Some(path))
        }
    };
    Ok(Context {
        dir,
        dockerfile,
        dockerfile_path,
        _scratch: None,
    })
}

/// `DIR/Dockerfile`, or `DIR/dockerfile` when only that exists (docker accepts both).
fn default_dockerfile(dir: &Path) -> PathBuf {
    let upper = dir.join("Dockerfile");
    let lower = dir.join("dockerfile");
    if !upper.exists() && lower.is_file() {
        lower
    } else {
        upper
    }
}

fn from_stdin(store: &Store, file: Option<&str>) -> CliResult<Context> {
    if file == Some("-") {
        return Err(CliError::Usage {
            message: "the context and the Dockerfile cannot both come from stdin".into(),
            hint: Some("name the Dockerfile with -f PATH, or put it in the context tar".into()),
        });
    }
    let scratch = Scratch::new(store, "context-")?;
    let dir = scratch.path().join("context");
    std::fs::create_dir(&dir).map_err(|e| CliError::io(&dir, e))?;
    let mut stdin = io::stdin().lock();
    let mut input = kiln_oci::layer::decompress(&mut stdin)?;
    let mut head = Vec::with_capacity(512);
    (&mut input)
        .take(512)
        .read_to_end(&mut head)
        .map_err(|e| CliError::io("<stdin>", e))?;
    if head.is_empty() {
        return Err(CliError::Usage {
            message: "the build context on stdin is empty".into(),
            hint: Some("pipe a tar of the context (`tar -c . | kiln build -`)".into()),
        });
    }
    if !is_tar_header(&head) {
        // `kiln build - < Dockerfile`: the text is the Dockerfile, the context is empty.
        if file.is_some() {
            return Err(CliError::Usage {
                message: "stdin holds a Dockerfile, not a context tar, and -f names another".into(),
                hint: Some("drop -f, or pipe a tar of the context".into()),
            });
        }
        let path = scratch.path().join("Dockerfile");
        let mut text = head;
        input
            .read_to_end(&mut text)
            .map_err(|e| CliError::io("<stdin>", e))?;
        std::fs::write(&path, &text).map_err(|e| CliError::io(&path, e))?;
        let mut dockerfile = dockerfile::read(&path.to_string_lossy())?;
        dockerfile.name = "-".into();
        return Ok(Context {
            dir,
            dockerfile,
            dockerfile_path: None,
            _scratch: Some(scratch),
        });
    }
    // The context is untrusted input: extraction resolves every path inside `dir`. Owners and
    // devices do not matter to a context (COPY sets its own owners), so neither is recreated.
    let options = ApplyOptions {
        whiteouts: WhiteoutMode::Delete,
        chown: false,
        devices: false,
    };
    apply_layer(io::Cursor::new(head).chain(input), &dir, &options)?;
    // As with docker, `-f` names a file inside the tar.
    let (name, path) = match file {
        Some(name) => (name.to_string(), dir.join(name)),
        None => {
            let path = default_dockerfile(&dir);
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "Dockerfile".into());
            (name, path)
        }
    };
    let path = inside(&dir, &path).map_err(|why| CliError::Usage {
        message: format!("the context tar on stdin: {name}: {why}"),
        hint: Some("put the Dockerfile in the tar, or name one in it with -f PATH".into()),
    })?;
    let mut dockerfile = dockerfile::read(&path.to_string_lossy())?;
    // Messages name it as the user knows it, not by its temporary path.
    dockerfile.name = name;
    Ok(Context {
        dir,
        dockerfile,
        dockerfile_path: Some(path),
        _scratch: Some(scratch),
    })
}

/// `path` with its symlinks resolved, if it is a regular file inside `dir`. An archive from
/// stdin may hold a Dockerfile that is a link to a file of the host; reading that would show
/// its lines in error messages.
fn inside(dir: &Path, path: &Path) -> Result<PathBuf, String> {
    let root = dir.canonicalize().map_err(|e| e.to_string())?;
    let real = match path.canonicalize() {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err("no such file".into()),
        Err(e) => return Err(e.to_string()),
    };
    if !real.starts_with(&root) {
        return Err("it leads out of the context".into());
    }
    if !real.is_file() {
        return Err("not a regular file".into());
    }
    Ok(real)
}

/// Whether `head` starts a tar archive: a 512-byte header with a valid checksum, or the zero
/// block of an empty archive.
fn is_tar_header(head: &[u8]) -> bool {
    if head.len() < 512 {
        return false;
    }
    if head.iter().all(|&b| b == 0) {
        return true;
    }
    let stored = head[148..156]
        .iter()
        .take_while(|&&b| b != 0 && b != b' ')
        .try_fold(0u32, |sum, &b| {
            (b'0'..=b'7')
                .contains(&b)
                .then(|| sum * 8 + u32::from(b - b'0'))
        });
    let stored = match stored {
        Some(value) => value,
        None => return false,
    };
    // The checksum is the byte sum of the header with its own field read as spaces.
    let sum: u32 = head[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    sum == stored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_are_told_from_text() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(4);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "Dockerfile", &b"FROM"[..])
            .unwrap_or_else(|e| panic!("{e}"));
        let tar = builder.into_inner().unwrap_or_else(|e| panic!("{e}"));
        assert!(is_tar_header(&tar[..512]));
        assert!(is_tar_header(&[0u8; 512]));
        let mut text = b"FROM busybox\nRUN echo hi\n".to_vec();
        text.resize(512, b'\n');
        assert!(!is_tar_header(&text));
        assert!(!is_tar_header(b"FROM busybox\n"));
    }
}
