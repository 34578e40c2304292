//! Choosing what a COPY or ADD writes: sources resolved inside their root, wildcards expanded,
//! directories listed, `--exclude` and `--parents` applied, destinations decided.

use super::archive;
use super::pattern::{glob_match, has_wildcard};
use super::{
    Chmod, CopySpec, Item, ItemKind, ItemSource, NodeKind, Owner, Selection, SourceFile, SourceRoot,
};
use crate::context::{BuildContext, Entry, EntryKind, sha256_file};
use crate::dockerignore::{Matcher, PatternLine};
use crate::error::{Error, Result};
use crate::path::{clean, join};
use kiln_snapshotter::Root;
use rayon::prelude::*;
use rustix::fs::OFlags;
use sha2::{Digest as _, Sha256};
use std::borrow::Cow;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A source path after resolution: what it is and where its bytes are. Borrowed from the
/// context's entry when it is one (a large COPY makes one per file).
#[derive(Debug, Clone)]
struct Node<'e> {
    /// Relative to the source root, slash-separated, symlink-free.
    rel: Cow<'e, str>,
    kind: ItemKind,
    mode: u32,
    uid: u32,
    gid: u32,
    digest: Option<&'e str>,
    special: bool,
}

/// The source root being read, with the kernel resolving every named path inside it.
struct SourceFs<'a> {
    host_root: PathBuf,
    root: Root,
    context: Option<(&'a BuildContext, &'a [Entry])>,
}

impl<'a> SourceFs<'a> {
    fn open(from: &SourceRoot<'a>) -> Result<SourceFs<'a>> {
        let (path, context) = match from {
            SourceRoot::Context(ctx, entries) => (ctx.root(), Some((*ctx, *entries))),
            SourceRoot::Dir(path) => (*path, None),
        };
        // The canonical path, so that what `/proc/self/fd` reports can be made relative to it.
        let host_root = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
        let root = Root::open(&host_root).map_err(|e| Error::io(&host_root, e))?;
        Ok(SourceFs {
            host_root,
            root,
            context,
        })
    }

    /// A source path as written, made relative to the root: context paths may not climb out
    /// with `..`; paths in a stage or image are absolute there, so `..` stops at its `/`.
    fn clean_source(&self, raw: &str) -> Result<String> {
        if self.context.is_some() {
            let cleaned = clean(raw);
            let cleaned = cleaned.strip_prefix('/').unwrap_or(&cleaned);
            if cleaned == ".." || cleaned.starts_with("../") {
                return Err(Error::CopyOutsideContext(raw.to_string()));
            }
            Ok(if cleaned == "." {
                String::new()
            } else {
                cleaned.to_string()
            })
        } else {
            Ok(clean(&format!("/{raw}"))[1..].to_string())
        }
    }

    /// `rel` with every symlink (the last component too) resolved inside the root.
    fn resolve(&self, rel: &str) -> io::Result<String> {
        let path = if rel.is_empty() { "." } else { rel };
        let fd = self.root.open_in_root(Path::new(path), OFlags::PATH)?;
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        let inside = real
            .strip_prefix(&self.host_root)
            .map_err(|_| io::Error::other(format!("{} resolved outside its root", rel)))?;
        Ok(slash_path(inside))
    }

    /// The node at the symlink-free path `rel`, or None when the build may not see it.
    fn node(&self, rel: &str) -> Result<Option<Node<'a>>> {
        if let Some((_, entries)) = self.context {
            if rel.is_empty() {
                return self.dir_node(rel);
            }
            return Ok(find_entry(entries, rel).map(node_of_entry));
        }
        self.dir_node(rel)
    }

    fn dir_node(&self, rel: &str) -> Result<Option<Node<'a>>> {
        let host = self.host_root.join(rel);
        match std::fs::symlink_metadata(&host) {
            Ok(meta) => Ok(Some(node_of_meta(rel.to_string(), &host, &meta)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&host, e)),
        }
    }

    /// The node a source path names, symlinks followed inside the root, or a "not found" error
    /// that says why and suggests close names.
    fn lookup_followed(&self, rel: &str, raw: &str) -> Result<Node<'a>> {
        let resolved = match self.resolve(rel) {
            Ok(r) => Some(r),
            Err(e)
                if matches!(
                    rustix::io::Errno::from_io_error(&e),
                    Some(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR)
                ) =>
            {
                None
            }
            Err(e) => return Err(Error::io(&self.host_root.join(rel), e)),
        };
        if let Some(resolved) = resolved
            && let Some(node) = self.node(&resolved)?
        {
            return Ok(node);
        }
        Err(self.not_found(rel, raw))
    }

    fn not_found(&self, rel: &str, raw: &str) -> Error {
        let hint = match &self.context {
            Some((ctx, entries)) => {
                let link = entries.iter().find_map(|e| match &e.kind {
                    EntryKind::Symlink(target) if e.path == rel => Some(target),
                    _ => None,
                });
                if ctx.is_ignored(rel) {
                    ": it is excluded by .dockerignore".to_string()
                } else if let Some(target) = link {
                    // Links resolve inside the context, as BuildKit's do: an absolute target or
                    // one climbing out of it names what the context does not hold.
                    format!(
                        " in the build context: it is a symbolic link to {target:?}, which the \
                         context does not hold (links are followed inside the context only)"
                    )
                } else {
                    let close = suggestions(rel, entries);
                    if close.is_empty() {
                        " in the build context".to_string()
                    } else {
                        format!(
                            " in the build context; did you mean {}?",
                            close.join(" or ")
                        )
                    }
                }
            }
            None => " in the source stage or image".to_string(),
        };
        Error::CopySourceNotFound {
            source_path: raw.to_string(),
            hint,
        }
    }

    /// Every node below the directory `rel`, parents before children, sorted per directory.
    fn descendants(&self, rel: &str, max_depth: usize) -> Result<Vec<Node<'a>>> {
        if let Some((_, entries)) = self.context {
            let prefix = if rel.is_empty() {
                String::new()
            } else {
                format!("{rel}/")
            };
            return Ok(entries
                .iter()
                .filter(|e| {
                    e.path.strip_prefix(prefix.as_str()).is_some_and(|below| {
                        !below.is_empty()
                            && (max_depth == usize::MAX || below.split('/').count() <= max_depth)
                    })
                })
                .map(node_of_entry)
                .collect());
        }
        let host = self.host_root.join(rel);
        let mut out = Vec::new();
        for item in walkdir::WalkDir::new(&host)
            .follow_links(false)
            .sort_by_file_name()
            .min_depth(1)
            .max_depth(max_depth)
        {
            let item = item.map_err(|e| {
                let at = e.path().unwrap_or(&host).to_path_buf();
                Error::io(
                    &at,
                    e.into_io_error()
                        .unwrap_or_else(|| io::Error::other("walk failed")),
                )
            })?;
            let meta = item.metadata().map_err(|e| {
                Error::io(
                    item.path(),
                    e.into_io_error()
                        .unwrap_or_else(|| io::Error::other("stat failed")),
                )
            })?;
            let below = slash_path(
                item.path()
                    .strip_prefix(&self.host_root)
                    .unwrap_or(item.path()),
            );
            out.push(node_of_meta(below, item.path(), &meta)?);
        }
        Ok(out)
    }

    /// Paths below the directory `base` matching `pattern` (fsutil's `resolveWildcards`): a
    /// matched directory is not searched further. Relative to `base`, in walk order.
    fn wildcard(&self, base: &str, pattern: &str) -> Result<Vec<String>> {
        let depth = pattern.split('/').count();
        let mut out: Vec<String> = Vec::new();
        // Subtrees are contiguous in walk order: only the last matched directory can hold a path.
        let mut skip: Option<String> = None;
        for node in self.descendants(base, depth)? {
            let sub = if base.is_empty() {
                node.rel.into_owned()
            } else {
                node.rel[base.len() + 1..].to_string()
            };
            if let Some(dir) = &skip
                && sub
                    .strip_prefix(dir.as_str())
                    .is_some_and(|r| r.starts_with('/'))
            {
                continue;
            }
            if glob_match(pattern, &sub).unwrap_or(false) {
                if node.kind == ItemKind::Dir {
                    skip = Some(sub.clone());
                }
                out.push(sub);
            }
        }
        Ok(out)
    }

    /// `host_root.join(rel)`, allocated once at its final size (a COPY makes one per file).
    fn host(&self, rel: &str) -> PathBuf {
        let mut host = PathBuf::with_capacity(self.host_root.as_os_str().len() + 1 + rel.len());
        host.push(&self.host_root);
        host.push(rel);
        host
    }
}

/// The entry at `rel`. Entries are in walk order, which is the order of their paths compared
/// component by component, so a binary search finds it; a name that is not UTF-8 (shown with
/// replacement characters) can break that order, so a miss is searched for again in full.
fn find_entry<'e>(entries: &'e [Entry], rel: &str) -> Option<&'e Entry> {
    let found = entries
        .binary_search_by(|e| e.path.split('/').cmp(rel.split('/')))
        .ok()
        .and_then(|at| entries.get(at));
    found.or_else(|| entries.iter().rev().find(|e| e.path == rel))
}

fn node_of_entry(e: &Entry) -> Node<'_> {
    let (kind, special) = match &e.kind {
        EntryKind::File => (ItemKind::File, false),
        EntryKind::Dir => (ItemKind::Dir, false),
        EntryKind::Symlink(t) => (ItemKind::Symlink(t.clone()), false),
        EntryKind::Special => (ItemKind::File, true),
    };
    Node {
        rel: Cow::Borrowed(&e.path),
        kind,
        mode: e.mode & 0o7777,
        uid: e.uid,
        gid: e.gid,
        digest: e.digest.as_deref(),
        special,
    }
}

fn node_of_meta<'e>(rel: String, host: &Path, meta: &std::fs::Metadata) -> Result<Node<'e>> {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        ItemKind::Dir
    } else if ft.is_symlink() {
        let target = std::fs::read_link(host).map_err(|e| Error::io(host, e))?;
        ItemKind::Symlink(target.to_string_lossy().into_owned())
    } else if ft.is_fifo() {
        ItemKind::Node(NodeKind::Fifo)
    } else if ft.is_char_device() {
        ItemKind::Node(NodeKind::Char { rdev: meta.rdev() })
    } else if ft.is_block_device() {
        ItemKind::Node(NodeKind::Block { rdev: meta.rdev() })
    } else {
        ItemKind::File
    };
    Ok(Node {
        rel: Cow::Owned(rel),
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        digest: None,
        // Sockets belong to a running process: a copy leaves them out, as BuildKit's does.
        special: ft.is_socket(),
    })
}

fn slash_path(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn base_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

/// Up to three context paths within a small edit distance of `wanted`, quoted.
fn suggestions(wanted: &str, entries: &[Entry]) -> Vec<String> {
    let mut scored: Vec<(usize, &str)> = entries
        .iter()
        .map(|e| (edit_distance(wanted, &e.path), e.path.as_str()))
        .filter(|(d, _)| *d <= 2.max(wanted.len() / 4))
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(3)
        .map(|(_, p)| format!("{p:?}"))
        .collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn is_url(raw: &str) -> bool {
    let lower = raw.to_ascii_lowercase();
    lower.starts_with("http://")
        || lower.starts_with("https://")
        || lower.starts_with("git@")
        || lower.starts_with("git://")
}

/// The destination of one COPY: a root-relative path and whether it names a directory.
struct Dest {
    rel: String,
    is_dir: bool,
}

impl Dest {
    fn new(spec: &CopySpec) -> Dest {
        // A trailing `/`, `.` or `..` names a directory (BuildKit appends the `/` for `.`).
        let is_dir = spec.dest.is_empty()
            || spec.dest.ends_with('/')
            || spec.dest == "."
            || spec.dest.ends_with("/.")
            || spec.dest == ".."
            || spec.dest.ends_with("/..");
        let abs = if spec.dest.starts_with('/') {
            clean(&spec.dest)
        } else {
            clean(&format!("/{}/{}", spec.workdir, spec.dest))
        };
        Dest {
            rel: abs.trim_start_matches('/').to_string(),
            is_dir,
        }
    }
}

/// One resolved top-level source.
struct Top<'a> {
    /// The name it takes in a directory destination (the matched name, not a link target).
    name: String,
    /// Its path to keep under the destination with `--parents`.
    kept: String,
    /// Its path as written or matched (before symlinks were resolved), relative to the root.
    lexical: String,
    node: Node<'a>,
}

fn invalid(spec: &CopySpec, reason: String) -> Error {
    Error::CopyInvalid {
        instruction: if spec.is_add { "ADD" } else { "COPY" },
        reason,
    }
}

/// With `--parents`, the part of the source path to keep: everything after a `/./` pivot, or
/// the whole path.
fn pivot_of(raw: &str, fs: &SourceFs<'_>) -> Result<Option<String>> {
    match raw.find("/./") {
        Some(at) => Ok(Some(fs.clean_source(&raw[..at])?)),
        None => Ok(None),
    }
}

fn strip_pivot(path: &str, pivot: Option<&str>) -> String {
    match pivot {
        Some(p) if !p.is_empty() => match path.strip_prefix(p) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                rest.trim_start_matches('/').to_string()
            }
            _ => path.to_string(),
        },
        _ => path.to_string(),
    }
}

pub(super) fn select(spec: &CopySpec, from: &SourceRoot<'_>) -> Result<Selection> {
    let chmod = spec.chmod.as_deref().map(Chmod::parse).transpose()?;
    if spec.checksum.is_some() {
        // BuildKit's messages. URLs are fetched (crate::remote) before a selection is made, so
        // a URL here was not: it is refused below.
        return Err(invalid(
            spec,
            if !spec.is_add {
                "checksum can't be specified for COPY".into()
            } else if spec.sources.len() != 1 {
                "checksum can't be specified for multiple sources".into()
            } else if is_url(&spec.sources[0]) {
                format!(
                    "a URL must be fetched before it is copied: {}",
                    spec.sources[0]
                )
            } else {
                "checksum can't be specified for non-HTTP sources".into()
            },
        ));
    }
    if spec.sources.is_empty() && spec.heredocs.is_empty() {
        return Err(Error::CopyNoSources);
    }
    let excludes = if spec.excludes.is_empty() {
        None
    } else {
        let lines: Vec<PatternLine> = spec
            .excludes
            .iter()
            .enumerate()
            .map(|(i, p)| PatternLine {
                line: i + 1,
                pattern: p.clone(),
            })
            .collect();
        Some(Matcher::new("--exclude", &lines)?)
    };
    let excluded = |sub: &str| excludes.as_ref().is_some_and(|m| m.is_excluded(sub));
    let dest = Dest::new(spec);
    let fs = SourceFs::open(from)?;

    let mut tops: Vec<Top> = Vec::new();
    let mut unmatched_wildcard: Option<&str> = None;
    for raw in &spec.sources {
        if is_url(raw) {
            return Err(invalid(
                spec,
                if spec.is_add {
                    format!("a URL must be fetched before it is copied: {raw}")
                } else {
                    format!("source can't be a URL for COPY: {raw}")
                },
            ));
        }
        let rel = fs.clean_source(raw)?;
        let pivot = if spec.parents {
            pivot_of(raw, &fs)?
        } else {
            None
        };
        let comps: Vec<&str> = if rel.is_empty() {
            Vec::new()
        } else {
            rel.split('/').collect()
        };
        let Some(first_wild) = comps.iter().position(|c| has_wildcard(c)) else {
            let node = fs.lookup_followed(&rel, raw)?;
            tops.push(Top {
                name: base_name(&rel).to_string(),
                kept: strip_pivot(&rel, pivot.as_deref()),
                lexical: rel.clone(),
                node,
            });
            continue;
        };
        let base = comps[..first_wild].join("/");
        let pattern = comps[first_wild..].join("/");
        glob_match(&pattern, "").map_err(|e| invalid(spec, format!("bad wildcard {e}")))?;
        let base_resolved = match fs.resolve(&base) {
            Ok(r) => r,
            Err(_) => {
                unmatched_wildcard.get_or_insert(raw);
                continue;
            }
        };
        let matches = fs.wildcard(&base_resolved, &pattern)?;
        if matches.is_empty() {
            unmatched_wildcard.get_or_insert(raw);
        }
        for sub in matches {
            if excluded(&sub) {
                continue;
            }
            let lexical = join(&base, &sub);
            let node = fs.lookup_followed(&join(&base_resolved, &sub), raw)?;
            tops.push(Top {
                name: base_name(&sub).to_string(),
                kept: strip_pivot(&lexical, pivot.as_deref()),
                lexical,
                node,
            });
        }
    }
    if tops.is_empty() && spec.heredocs.is_empty() {
        return Err(match unmatched_wildcard {
            Some(raw) => fs.not_found(raw, raw),
            None => Error::CopyNoSources,
        });
    }
    if tops.len() + spec.heredocs.len() > 1 && !dest.is_dir && !spec.parents {
        return Err(Error::CopyDestNotDir(if spec.is_add {
            "ADD"
        } else {
            "COPY"
        }));
    }

    let cache_path = |dest_rel: &str| -> String {
        match dest_rel.strip_prefix(dest.rel.as_str()) {
            Some(rest) if dest.rel.is_empty() => rest.to_string(),
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                rest.trim_start_matches('/').to_string()
            }
            _ => dest_rel.to_string(),
        }
    };
    let item = |node: &Node, dest_rel: String, into: Option<String>| -> Result<Item> {
        if node.special {
            return Err(invalid(
                spec,
                format!(
                    "{} is a device, FIFO or socket, which cannot be copied",
                    node.rel
                ),
            ));
        }
        Ok(Item {
            cache_path: cache_path(&dest_rel),
            dest: dest_rel,
            kind: node.kind.clone(),
            source: ItemSource::Path(fs.host(&node.rel)),
            mode: node.mode,
            uid: node.uid,
            gid: node.gid,
            digest: node.digest.map(str::to_string),
            into_dir_name: into,
            created_parent: false,
        })
    };

    let mut items = Vec::new();
    // With --parents, directories between the pivot and each source are copied too (fsutil's
    // include patterns create them from their sources), each once.
    let mut kept_dirs: std::collections::HashSet<String> = std::collections::HashSet::new();
    for top in &tops {
        if spec.parents {
            let prefix = &top.lexical[..top.lexical.len() - top.kept.len()];
            let comps: Vec<&str> = top.kept.split('/').filter(|c| !c.is_empty()).collect();
            for i in 1..comps.len() {
                let kept = comps[..i].join("/");
                if kept_dirs.insert(kept.clone()) {
                    let node = fs.lookup_followed(&format!("{prefix}{kept}"), &top.lexical)?;
                    items.push(item(&node, join(&dest.rel, &kept), None)?);
                }
            }
        }
        if top.node.kind == ItemKind::Dir {
            let target = if spec.parents {
                join(&dest.rel, &top.kept)
            } else {
                dest.rel.clone()
            };
            if spec.parents && !top.kept.is_empty() {
                if kept_dirs.insert(top.kept.clone()) {
                    items.push(item(&top.node, target.clone(), None)?);
                }
            } else {
                items.push(Item {
                    cache_path: cache_path(&target),
                    dest: target.clone(),
                    kind: ItemKind::Dir,
                    source: ItemSource::None,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    digest: None,
                    into_dir_name: None,
                    created_parent: true,
                });
            }
            // Made on every core, in order: a large tree has an item per file.
            let below: Vec<Option<Result<Item>>> = fs
                .descendants(&top.node.rel, usize::MAX)?
                .par_iter()
                .map(|child| {
                    let sub = if top.node.rel.is_empty() {
                        &child.rel[..]
                    } else {
                        &child.rel[top.node.rel.len() + 1..]
                    };
                    // Sockets, FIFOs and devices inside a copied directory are left out (a
                    // named one is an error); `--exclude` applies below each source.
                    (!child.special && !excluded(sub))
                        .then(|| item(child, join(&target, sub), None))
                })
                .collect();
            items.reserve(below.len());
            for child in below.into_iter().flatten() {
                items.push(child?);
            }
            continue;
        }
        let host = fs.host(&top.node.rel);
        if spec.is_add
            && spec.unpack != Some(false)
            && top.node.kind == ItemKind::File
            && !top.node.special
            && archive::is_archive(&host)?
        {
            let target = if spec.parents {
                join(&dest.rel, top.kept.rsplit_once('/').map_or("", |(d, _)| d))
            } else {
                dest.rel.clone()
            };
            let mut it = item(&top.node, target, None)?;
            it.kind = ItemKind::Archive;
            items.push(it);
            continue;
        }
        let (target, into) = if spec.parents {
            (join(&dest.rel, &top.kept), None)
        } else if dest.is_dir {
            (join(&dest.rel, &top.name), None)
        } else {
            (dest.rel.clone(), Some(top.name.clone()))
        };
        items.push(item(&top.node, target, into)?);
    }
    for doc in &spec.heredocs {
        let (target, into) = if dest.is_dir {
            (join(&dest.rel, &doc.name), None)
        } else {
            (dest.rel.clone(), Some(doc.name.clone()))
        };
        items.push(Item {
            cache_path: cache_path(&target),
            dest: target,
            kind: ItemKind::File,
            source: ItemSource::Inline(doc.content.clone()),
            mode: 0o644,
            uid: 0,
            gid: 0,
            digest: Some(sha256_bytes(doc.content.as_bytes())),
            into_dir_name: into,
            created_parent: false,
        });
    }
    Ok(Selection {
        items,
        keep_owner: matches!(from, SourceRoot::Dir(_)),
        chown: spec.chown.clone(),
        chmod,
    })
}

fn sha256_bytes(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub(super) fn cache_sources(sel: &Selection, dest_root: Option<&Path>) -> Result<Vec<SourceFile>> {
    let owner = sel
        .chown
        .as_deref()
        .map(|c| Owner::resolve_for_cache(c, dest_root))
        .transpose()?;
    let source_file = |it: &Item| -> Result<SourceFile> {
        let (uid, gid) = it.owner(sel, owner);
        let digest = match (&it.kind, &it.source) {
            (ItemKind::File | ItemKind::Archive, ItemSource::Path(p)) => match &it.digest {
                Some(d) => d.clone(),
                None => sha256_file(p)?,
            },
            (ItemKind::File, ItemSource::Inline(text)) => sha256_bytes(text.as_bytes()),
            _ => String::new(),
        };
        Ok(SourceFile {
            path: it.cache_path.clone(),
            kind: match it.kind {
                ItemKind::File => 'f',
                ItemKind::Dir => 'd',
                ItemKind::Symlink(_) => 'l',
                ItemKind::Archive => 'a',
                ItemKind::Node(node) => node.describe().0,
            },
            mode: it.final_mode(sel.chmod.as_ref()),
            uid,
            gid,
            digest,
            link_target: match &it.kind {
                ItemKind::Symlink(t) => t.clone(),
                ItemKind::Node(node) => node.describe().1,
                _ => String::new(),
            },
        })
    };
    // Sized up front: a COPY of a large tree has one per file.
    let mut files = Vec::with_capacity(sel.items.len());
    for it in &sel.items {
        files.push(source_file(it)?);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(d: &str, workdir: &str) -> (String, bool) {
        let spec = CopySpec {
            dest: d.into(),
            workdir: workdir.into(),
            ..CopySpec::default()
        };
        let d = Dest::new(&spec);
        (d.rel, d.is_dir)
    }

    #[test]
    fn destinations_are_relative_to_workdir_and_slash_means_directory() {
        let cases = [
            ("/app", "/w", "app", false),
            ("/app/", "/w", "app", true),
            ("app", "/w", "w/app", false),
            ("app/", "/w/", "w/app", true),
            (".", "/w", "w", true),
            ("./", "/w", "w", true),
            ("", "/w", "w", true),
            ("/", "/w", "", true),
            ("../x", "/w/v", "w/x", false),
            ("../../../..", "/w", "", true),
            ("/a/./b/.", "/", "a/b", true),
        ];
        for (d, w, rel, is_dir) in cases {
            assert_eq!(
                dest(d, w),
                (rel.to_string(), is_dir),
                "dest {d:?} workdir {w:?}"
            );
        }
    }

    #[test]
    fn parents_keep_the_path_after_the_pivot() {
        assert_eq!(strip_pivot("a/b/c", None), "a/b/c");
        assert_eq!(strip_pivot("a/b/c", Some("a")), "b/c");
        assert_eq!(strip_pivot("a/b/c", Some("")), "a/b/c");
        assert_eq!(strip_pivot("x/y", Some("a")), "x/y");
        assert_eq!(strip_pivot("ab/c", Some("a")), "ab/c");
    }

    /// A plain file of the context at `path`.
    fn entry(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            digest: None,
        }
    }

    #[test]
    fn close_names_are_suggested() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
        let entries = [
            entry("package.json"),
            entry("src/main.rs"),
            entry("README.md"),
        ];
        assert_eq!(suggestions("pakage.json", &entries), ["\"package.json\""]);
        assert!(suggestions("totally-different", &entries).is_empty());
    }

    #[test]
    fn entries_are_found_in_walk_order() {
        // Walk order: a directory before its contents, `a/b` before `a-c` though '-' < '/'. The
        // last two are out of order, as names that are not UTF-8 can leave them: found as well.
        let entries: Vec<Entry> = ["a", "a/b", "a/b/c", "a-c", "b", "\u{fffd}", "a.x"]
            .into_iter()
            .map(entry)
            .collect();
        for wanted in ["a", "a/b", "a/b/c", "a-c", "b", "\u{fffd}", "a.x"] {
            let found = find_entry(&entries, wanted).map(|e| e.path.as_str());
            assert_eq!(found, Some(wanted));
        }
        assert!(find_entry(&entries, "a/c").is_none());
    }

    #[test]
    fn urls_are_told_apart_from_paths() {
        for url in [
            "http://x/y",
            "HTTPS://x",
            "git@github.com:a/b.git",
            "git://h/r",
        ] {
            assert!(is_url(url), "{url}");
        }
        for path in ["http", "./https://", "dir/file", "gitlab/x"] {
            assert!(!is_url(path), "{path}");
        }
    }
}
