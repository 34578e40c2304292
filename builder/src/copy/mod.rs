//! COPY and ADD: choosing the sources (context, a stage's or an image's root, heredocs, local
//! archives), listing them for the cache key, and writing them into a destination root.
//!
//! The rules follow BuildKit (`dockerfile2llb` and fsutil's copy): a directory source copies its
//! contents, a named symlink source is followed (inside its root), symlinks below a copied
//! directory stay symlinks, wildcards use Go's `filepath.Match`, and several sources need a
//! directory destination. Every write into the destination goes through the snapshotter's
//! root-confined resolver, so symlinks an image planted (`/usr -> /`) resolve inside the root.
//!
//! One step, as the solver drives it:
//!
//! ```no_run
//! # fn step(ctx: &kiln_builder::context::BuildContext,
//! #         entries: &[kiln_builder::context::Entry],
//! #         rootfs: &std::path::Path) -> kiln_builder::Result<()> {
//! use kiln_builder::copy::{self, CopySpec, SourceRoot};
//! let spec = CopySpec {
//!     sources: vec!["src/".into()],
//!     dest: "/app/".into(),
//!     workdir: "/".into(),
//!     ..CopySpec::default()
//! };
//! let selection = copy::select(&spec, &SourceRoot::Context(ctx, entries))?;
//! let cache_inputs = selection.cache_sources(None)?; // → CacheKey::sources
//! // On a cache miss, with the step's snapshot mounted at `rootfs`:
//! let stats = copy::apply(&selection, rootfs)?;
//! # let _ = (cache_inputs, stats);
//! # Ok(())
//! # }
//! ```

mod archive;
mod owner;
mod pattern;
mod select;
mod write;

use crate::cache_key::SourceFile;
use crate::context::{BuildContext, Entry};
use crate::error::Result;
use std::path::{Path, PathBuf};

pub use owner::{Chmod, Clause, Owner};
pub use pattern::glob_match;

/// One COPY or ADD, every word already expanded by the solver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopySpec {
    /// Source paths as written (after expansion), heredoc sources excluded.
    pub sources: Vec<String>,
    pub dest: String,
    /// The stage's WORKDIR, which a relative `dest` is relative to.
    pub workdir: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    /// `--link`: the copy does not change; the solver writes it into an empty directory of its
    /// own (see [`apply_with_users`]).
    pub link: bool,
    pub parents: bool,
    /// `--exclude` patterns (`.dockerignore` syntax), matched below each source.
    pub excludes: Vec<String>,
    pub heredocs: Vec<HeredocSource>,
    /// ADD rather than COPY: local archives are extracted.
    pub is_add: bool,
    /// ADD `--checksum`: only allowed for remote sources, which are not supported yet.
    pub checksum: Option<String>,
    /// ADD `--unpack`: `None` extracts local archives, `Some(false)` copies them as files.
    pub unpack: Option<bool>,
}

/// A heredoc source (`COPY <<EOF /dst`): a file named after its delimiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeredocSource {
    /// The delimiter word, which is also the file's name.
    pub name: String,
    /// The final text (expanded unless the delimiter was quoted).
    pub content: String,
}

/// Where the sources of one COPY come from.
#[derive(Debug, Clone, Copy)]
pub enum SourceRoot<'a> {
    /// The build context, with the entries its walk produced (`.dockerignore` applied, hashed
    /// or not: unhashed files are hashed when listed for the cache).
    Context(&'a BuildContext, &'a [Entry]),
    /// A stage's or an image's root filesystem (`COPY --from`). Paths are absolute inside it.
    Dir(&'a Path),
}

/// What one node of the copy becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKind {
    File,
    Dir,
    Symlink(String),
    /// A local archive ADD extracts into the item's destination directory.
    Archive,
    /// A FIFO or a device node of a stage or image (`COPY --from`), made again with
    /// `mknod`, as BuildKit's copy makes them.
    Node(NodeKind),
}

/// The kind of a [`ItemKind::Node`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Fifo,
    Char { rdev: u64 },
    Block { rdev: u64 },
}

impl NodeKind {
    /// What the cache key records: the kind's letter and, for devices, the device number.
    pub fn describe(self) -> (char, String) {
        match self {
            NodeKind::Fifo => ('p', String::new()),
            NodeKind::Char { rdev } => ('c', rdev.to_string()),
            NodeKind::Block { rdev } => ('b', rdev.to_string()),
        }
    }
}

/// Where an item's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemSource {
    /// A path on the host, already resolved inside its source root (parents are real
    /// directories, the final component is not followed).
    Path(PathBuf),
    /// Inline content (heredocs).
    Inline(String),
    /// Nothing to read (a destination directory the copy creates).
    None,
}

/// One path the copy writes, in the order it is written (parents before children).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Where it lands, relative to the destination root, slash-separated, clean.
    pub dest: String,
    /// What the cache sees as its path: relative to the copy's destination directory.
    pub cache_path: String,
    pub kind: ItemKind,
    pub source: ItemSource,
    /// Permission bits (with set-id and sticky bits) of the source, before `--chmod`.
    pub mode: u32,
    /// Owner of the source (used for `--from` sources without `--chown`).
    pub uid: u32,
    pub gid: u32,
    /// `sha256:<hex>` when already known (context files the walk hashed).
    pub digest: Option<String>,
    /// For a top-level file whose destination has no trailing `/`: the name it takes inside
    /// the destination if that turns out to be an existing directory.
    pub into_dir_name: Option<String>,
    /// A directory BuildKit creates as the destination itself rather than copying from a
    /// source directory: it gets 0755 and the `--chown` owner, not the source's metadata.
    pub created_parent: bool,
}

/// The resolved sources of one COPY or ADD: every path it will write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub items: Vec<Item>,
    /// Keep the sources' owners (`--from` sources) when there is no `--chown`.
    pub keep_owner: bool,
    /// `--chown` as written (resolved against the destination root when used).
    pub chown: Option<String>,
    /// `--chmod`, parsed.
    pub chmod: Option<Chmod>,
}

/// What a copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub archives: u64,
    pub bytes: u64,
}

/// Resolve the sources of `spec` in `from`: wildcards, directories, `--parents`, `--exclude`,
/// heredocs; errors for missing sources, paths outside the context and destination misuse.
pub fn select(spec: &CopySpec, from: &SourceRoot<'_>) -> Result<Selection> {
    select::select(spec, from)
}

impl Selection {
    /// The cache inputs of this selection: every path as it will land (relative to the
    /// destination; `""` is the destination itself), its kind (`f` file, `d` directory, `l`
    /// symlink, `a` an archive ADD extracts there), mode after `--chmod`, owner after `--chown`,
    /// content digest and link target. `--chown` names are resolved in `dest_root`'s passwd and
    /// group files; with `None` they are recorded as [`Owner::UNRESOLVED`] (the parent step's
    /// key already fixes those files, so the key stays exact). Unhashed files are hashed here.
    pub fn cache_sources(&self, dest_root: Option<&Path>) -> Result<Vec<SourceFile>> {
        select::cache_sources(self, dest_root)
    }
}

/// Write `selection` into the root filesystem at `dest_root` (`--chown` names resolved in its
/// passwd and group files).
pub fn apply(selection: &Selection, dest_root: &Path) -> Result<CopyStats> {
    write::apply(selection, dest_root, dest_root)
}

/// As [`apply`], with `--chown` names resolved in `users_root` instead: for `COPY --link`,
/// which writes into an empty directory that becomes its own layer while users come from the
/// stage it lands on.
pub fn apply_with_users(
    selection: &Selection,
    dest_root: &Path,
    users_root: &Path,
) -> Result<CopyStats> {
    write::apply(selection, dest_root, users_root)
}

impl Item {
    /// The owner this item gets: `--chown` if given, else the source's for `--from` sources,
    /// else root.
    pub fn owner(&self, selection: &Selection, chown: Option<Owner>) -> (u32, u32) {
        match chown {
            Some(o) => (o.uid, o.gid),
            None if selection.keep_owner && !self.created_parent => (self.uid, self.gid),
            None => (0, 0),
        }
    }

    /// The permission bits this item gets, after `--chmod`.
    pub fn final_mode(&self, chmod: Option<&Chmod>) -> u32 {
        match (&self.kind, chmod) {
            _ if self.created_parent => 0o755,
            (ItemKind::Symlink(_), _) => 0o777,
            (ItemKind::Archive, _) => self.mode & 0o7777,
            (kind, Some(c)) => c.apply(self.mode, *kind == ItemKind::Dir),
            (_, None) => self.mode & 0o7777,
        }
    }
}

impl CopySpec {
    /// The spec of a parsed COPY: `expand` is applied to every word (sources, destination,
    /// flags) and to the body of each heredoc whose delimiter was not quoted.
    pub fn from_copy<E>(
        copy: &kiln_grammar::instructions::CopyInstruction,
        workdir: &str,
        expand: impl FnMut(&str) -> std::result::Result<String, E>,
    ) -> std::result::Result<CopySpec, E> {
        let mut spec = CopySpec::from_transfer(&copy.transfer, workdir, expand)?;
        spec.parents = copy.parents;
        Ok(spec)
    }

    /// The spec of a parsed ADD, expanded as [`CopySpec::from_copy`] does.
    pub fn from_add<E>(
        add: &kiln_grammar::instructions::AddInstruction,
        workdir: &str,
        mut expand: impl FnMut(&str) -> std::result::Result<String, E>,
    ) -> std::result::Result<CopySpec, E> {
        let checksum = add.checksum.as_deref().map(&mut expand).transpose()?;
        let mut spec = CopySpec::from_transfer(&add.transfer, workdir, expand)?;
        spec.is_add = true;
        spec.checksum = checksum;
        spec.unpack = add.unpack;
        Ok(spec)
    }

    fn from_transfer<E>(
        t: &kiln_grammar::instructions::Transfer,
        workdir: &str,
        mut expand: impl FnMut(&str) -> std::result::Result<String, E>,
    ) -> std::result::Result<CopySpec, E> {
        let mut all = |words: &[String]| -> std::result::Result<Vec<String>, E> {
            words.iter().map(|w| expand(w)).collect()
        };
        let sources = all(&t.sources)?;
        let excludes = all(&t.excludes)?;
        let mut one = |w: &Option<String>| w.as_deref().map(&mut expand).transpose();
        let chown = one(&t.chown)?;
        let chmod = one(&t.chmod)?;
        let heredocs = t
            .heredocs
            .iter()
            .map(|h| {
                Ok(HeredocSource {
                    name: h.name.clone(),
                    content: if h.expand {
                        expand(&h.content)?
                    } else {
                        h.content.clone()
                    },
                })
            })
            .collect::<std::result::Result<_, E>>()?;
        Ok(CopySpec {
            sources,
            dest: expand(&t.dest)?,
            workdir: workdir.to_string(),
            chown,
            chmod,
            link: t.link,
            parents: false,
            excludes,
            heredocs,
            is_add: false,
            checksum: None,
            unpack: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_grammar::ast::Heredoc;
    use kiln_grammar::instructions::{AddInstruction, CopyInstruction, Transfer};

    fn transfer() -> Transfer {
        let doc = |name: &str, expand: bool| Heredoc {
            name: name.into(),
            content: "$X\n".into(),
            expand,
            chomp: false,
            file_descriptor: None,
        };
        Transfer {
            sources: vec!["$X.txt".into()],
            heredocs: vec![doc("A", true), doc("B", false)],
            dest: "/$X/".into(),
            chown: Some("$X".into()),
            chmod: None,
            link: true,
            excludes: vec!["*.$X".into()],
        }
    }

    fn expand(word: &str) -> Result<String, String> {
        Ok(word.replace("$X", "v"))
    }

    #[test]
    fn specs_from_instructions_expand_words_and_unquoted_heredocs() {
        let copy = CopyInstruction {
            transfer: transfer(),
            from: None,
            parents: true,
        };
        let spec = CopySpec::from_copy(&copy, "/w", expand).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.sources, ["v.txt"]);
        assert_eq!(spec.dest, "/v/");
        assert_eq!(spec.workdir, "/w");
        assert_eq!(spec.chown.as_deref(), Some("v"));
        assert_eq!(spec.excludes, ["*.v"]);
        assert!(spec.parents && spec.link && !spec.is_add);
        let bodies: Vec<&str> = spec.heredocs.iter().map(|h| h.content.as_str()).collect();
        assert_eq!(bodies, ["v\n", "$X\n"]);

        let add = AddInstruction {
            transfer: transfer(),
            checksum: Some("sha256:$X".into()),
            keep_git_dir: false,
            unpack: Some(false),
        };
        let spec = CopySpec::from_add(&add, "/", expand).unwrap_or_else(|e| panic!("{e}"));
        assert!(spec.is_add && !spec.parents);
        assert_eq!(spec.checksum.as_deref(), Some("sha256:v"));
        assert_eq!(spec.unpack, Some(false));
        assert_eq!(
            CopySpec::from_copy(&copy, "/", |_| Err::<String, _>("boom")).err(),
            Some("boom")
        );
    }
}
