//! `--chown` and `--chmod` of COPY and ADD.
//!
//! `--chown` follows BuildKit's `readUser`: a numeric user is taken as is and, without a group,
//! also gives the group id (`--chown=1000` is 1000:1000); a user name is looked up in the
//! destination root's `/etc/passwd` and brings its primary group; a group name is looked up in
//! its `/etc/group`. `--chmod` takes octal (`0755`) or symbolic (`u+x,g-w`, `a=rX`) modes.

use crate::error::{Error, Result};
use kiln_snapshotter::Root;
use rustix::fs::OFlags;
use std::io::Read;
use std::path::Path;

/// A resolved owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

fn invalid(instruction: &'static str, reason: String) -> Error {
    Error::CopyInvalid {
        instruction,
        reason,
    }
}

impl Owner {
    /// Resolve `--chown=user[:group]` against the passwd and group files of `dest_root` (read
    /// inside that root; absent files are empty, so only numeric ids work then).
    pub fn resolve(spec: &str, dest_root: Option<&Path>) -> Result<Owner> {
        Owner::resolve_with(spec, dest_root, false)
    }

    /// As [`Owner::resolve`], but without a root a name is not an error: its id is
    /// [`Owner::UNRESOLVED`]. For cache keys, where the parent step's key already pins the
    /// passwd and group files a name resolves against.
    pub fn resolve_for_cache(spec: &str, dest_root: Option<&Path>) -> Result<Owner> {
        Owner::resolve_with(spec, dest_root, true)
    }

    /// The id a cache key records for a name it could not resolve.
    pub const UNRESOLVED: u32 = u32::MAX;

    fn resolve_with(spec: &str, dest_root: Option<&Path>, lenient: bool) -> Result<Owner> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        if user.is_empty() || group == Some("") {
            return Err(invalid(
                "--chown",
                format!("invalid user specification {spec:?}: expected user[:group]"),
            ));
        }
        let needs_files =
            user.parse::<u32>().is_err() || group.is_some_and(|g| g.parse::<u32>().is_err());
        let (passwd, groups) = match (needs_files, dest_root) {
            (true, Some(root)) => (
                read_in_root(root, "etc/passwd")?,
                read_in_root(root, "etc/group")?,
            ),
            (true, None) if lenient => {
                let id = |part: &str| part.parse::<u32>().unwrap_or(Owner::UNRESOLVED);
                let uid = id(user);
                let gid = group.map_or(
                    if user.parse::<u32>().is_ok() {
                        uid
                    } else {
                        Owner::UNRESOLVED
                    },
                    id,
                );
                return Ok(Owner { uid, gid });
            }
            _ => (String::new(), String::new()),
        };
        let refused = |e: kiln_runner::user::UserError| invalid("--chown", format!("{e}"));
        let (uid, primary) = match user.parse::<u32>() {
            Ok(uid) => (uid, uid),
            Err(_) => {
                let u = kiln_runner::user::resolve(user, &passwd, &groups).map_err(refused)?;
                (u.uid, u.gid)
            }
        };
        let gid = match group {
            None => primary,
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => {
                    kiln_runner::user::resolve(&format!("0:{g}"), &passwd, &groups)
                        .map_err(refused)?
                        .gid
                }
            },
        };
        Ok(Owner { uid, gid })
    }
}

/// A file of the destination root, opened inside it (an image's `/etc -> /host/etc` symlink
/// stays inside); a missing file reads as empty.
fn read_in_root(root: &Path, rel: &str) -> Result<String> {
    let dir = Root::open(root).map_err(|e| Error::io(root, e))?;
    let fd = match dir.open_in_root(Path::new(rel), OFlags::RDONLY) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(Error::io(&root.join(rel), e)),
    };
    let mut text = String::new();
    std::fs::File::from(fd)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(&root.join(rel), e))?;
    Ok(text)
}

/// A parsed `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// `0755`: the permission bits, replacing the source's.
    Octal(u32),
    /// `u+x,g-w`: clauses applied in order to the source's mode.
    Symbolic(Vec<Clause>),
}

/// One `who op perms` clause of a symbolic mode, e.g. `go-w`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// Mask of the classes it applies to (`u` 0o4700, `g` 0o2070, `o` 0o1007); all for none.
    who: u32,
    /// Operations in order: `+`, `-` or `=` with their permission letters.
    ops: Vec<(char, String)>,
}

impl Chmod {
    pub fn parse(text: &str) -> Result<Chmod> {
        let bad = |why: &str| invalid("--chmod", format!("invalid mode {text:?}: {why}"));
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            let mode = u32::from_str_radix(text, 8).map_err(|_| bad("not an octal number"))?;
            if mode > 0o7777 {
                return Err(bad("octal modes go up to 7777"));
            }
            return Ok(Chmod::Octal(mode));
        }
        let mut clauses = Vec::new();
        for part in text.split(',') {
            let mut chars = part.chars().peekable();
            let mut who = 0;
            while let Some(c) = chars.next_if(|c| "ugoa".contains(*c)) {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    _ => 0o7777,
                };
            }
            let mut ops = Vec::new();
            while let Some(op) = chars.next_if(|c| "+-=".contains(*c)) {
                let mut perms = String::new();
                while let Some(p) = chars.next_if(|c| "rwxXst".contains(*c)) {
                    perms.push(p);
                }
                ops.push((op, perms));
            }
            if ops.is_empty() || chars.next().is_some() {
                return Err(bad("expected octal digits or clauses like u+x,g-w"));
            }
            clauses.push(Clause {
                who: if who == 0 { 0o7777 } else { who },
                ops,
            });
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The mode a source with `mode` (permission bits and set-id bits) gets.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let mut mode = mode & 0o7777;
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                for clause in clauses {
                    for (op, perms) in &clause.ops {
                        let mut bits = 0;
                        for p in perms.chars() {
                            bits |= match p {
                                'r' => 0o444,
                                'w' => 0o222,
                                'x' => 0o111,
                                // Execute only for directories or what is already executable.
                                'X' if is_dir || mode & 0o111 != 0 => 0o111,
                                's' => 0o6000,
                                't' => 0o1000,
                                _ => 0,
                            };
                        }
                        let bits = bits & clause.who;
                        match op {
                            '+' => mode |= bits,
                            '-' => mode &= !bits,
                            _ => mode = (mode & !clause.who) | bits,
                        }
                    }
                }
                mode
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_symbolic_modes() {
        let cases: &[(&str, u32, bool, u32)] = &[
            ("0755", 0o600, false, 0o755),
            ("644", 0o777, false, 0o644),
            ("4755", 0o644, false, 0o4755),
            ("u+x", 0o644, false, 0o744),
            ("u+x,g-w", 0o664, false, 0o744),
            ("+x", 0o644, false, 0o755),
            ("a=r", 0o755, false, 0o444),
            ("go=", 0o755, false, 0o700),
            ("a+X", 0o644, false, 0o644),
            ("a+X", 0o644, true, 0o755),
            ("a+X", 0o744, false, 0o755),
            ("u=rwx,g=rx,o=", 0o0, false, 0o750),
            ("u+s", 0o755, false, 0o4755),
            ("o+t", 0o777, true, 0o1777),
            ("u-w+x", 0o644, false, 0o544),
        ];
        for (text, from, dir, want) in cases {
            let m = Chmod::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(m.apply(*from, *dir), *want, "{text} on {from:o}");
        }
        for bad in ["", "8", "77777", "u", "u+q", "x+u", "u+x,", "rwx"] {
            assert!(Chmod::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn chown_follows_buildkit() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let etc = root.path().join("etc");
        std::fs::create_dir(&etc).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(etc.join("group"), "root:x:0:\nstaff:x:50:\napp:x:1001:\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let r = Some(root.path());
        let own = |s: &str| Owner::resolve(s, r).map(|o| (o.uid, o.gid));
        assert_eq!(own("app").ok(), Some((1000, 1001)));
        assert_eq!(own("app:staff").ok(), Some((1000, 50)));
        assert_eq!(own("1234").ok(), Some((1234, 1234)));
        assert_eq!(own("1234:7").ok(), Some((1234, 7)));
        assert_eq!(own("0:staff").ok(), Some((0, 50)));
        assert!(own("ghost").is_err());
        assert!(own("app:ghosts").is_err());
        assert!(own(":staff").is_err());
        assert!(own("app:").is_err());
        // Without a root to read, names cannot resolve but numbers still do.
        assert_eq!(
            Owner::resolve("5:6", None).map(|o| (o.uid, o.gid)).ok(),
            Some((5, 6))
        );
        assert!(Owner::resolve("app", None).is_err());
        let unresolved = Owner::UNRESOLVED;
        let cached = |s: &str| {
            Owner::resolve_for_cache(s, None)
                .map(|o| (o.uid, o.gid))
                .ok()
        };
        assert_eq!(cached("app"), Some((unresolved, unresolved)));
        assert_eq!(cached("app:7"), Some((unresolved, 7)));
        assert_eq!(cached("7:staff"), Some((7, unresolved)));
        assert_eq!(cached("7"), Some((7, 7)));
        assert!(Owner::resolve_for_cache("app:", None).is_err());
        // With a root, names resolve as for the copy itself.
        assert_eq!(
            Owner::resolve_for_cache("app", r)
                .map(|o| (o.uid, o.gid))
                .ok(),
            Some((1000, 1001))
        );
    }
}
