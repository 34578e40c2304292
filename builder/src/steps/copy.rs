//! COPY and ADD: the words expanded, the source root found (the build context, or with
//! `--from` a stage or an image mounted read-only for the step), the sources selected and keyed
//! by content, and on a cache miss copied into a snapshot that becomes the layer. Selecting and
//! writing are [`crate::copy`]'s; this module is the step around them.

use super::{Changes, Expand, Step, layer_step, resolve_from};
use crate::cache_key::CacheKey;
use crate::copy::{self, CopySpec, HeredocSource, SourceRoot};
use crate::error::{Error, Result};
use crate::stage::StageCtx;
use crate::state::StageState;
use kiln_grammar::expand::Lexer;
use kiln_grammar::instructions::{Instruction, InstructionKind, Transfer};
use kiln_snapshotter::ActiveSnapshot;

pub fn copy(
    ctx: &mut StageCtx<'_, '_>,
    state: &mut StageState,
    instruction: &Instruction,
) -> Result<()> {
    let location = ctx.build.location(instruction.span);
    let at = |e: Error| match e {
        Error::Cancelled | Error::At { .. } | Error::Dockerfile(_) => e,
        e => Error::At {
            location: location.clone(),
            source: Box::new(e),
        },
    };
    let (spec, from) = spec_of(ctx, state, instruction)?;
    let from = from
        .as_deref()
        .map(|f| resolve_from(ctx, f))
        .transpose()
        .map_err(at)?;
    let keyword = instruction.keyword();
    let mut created_by = keyword.to_string();
    for source in &spec.sources {
        created_by.push(' ');
        created_by.push_str(source);
    }
    for doc in &spec.heredocs {
        created_by.push_str(" <<");
        created_by.push_str(&doc.name);
    }
    created_by.push(' ');
    created_by.push_str(&spec.dest);
    created_by.push_str(" # buildkit");

    let name = ctx.next_title(state, instruction);
    let build = ctx.build;
    let fetch_options = crate::remote::FetchOptions {
        keep_git_dir: matches!(&instruction.kind, InstructionKind::Add(a) if a.keep_git_dir),
        reproducible: build.clamp_mtime.is_some(),
        ssh_agent: build.request.ssh.get("default").map(|p| p.as_path()),
    };
    // The source root stays mounted for the whole step: selection reads it, the copy writes
    // from it.
    let source_snapshot: Option<ActiveSnapshot> = match &from {
        None => None,
        Some(fs) => Some(build.snapshotter.prepare(fs.chain.as_ref())?),
    };
    let result = (|| {
        let selected = (|| {
            let fetched = crate::remote::fetch(&spec, build.store.tmp_dir(), fetch_options)?;
            let selection = match (&fetched, &source_snapshot) {
                (Some(f), _) => crate::remote::select(f)?,
                (None, Some(snapshot)) => {
                    copy::select(&spec, &SourceRoot::Dir(snapshot.mount_point()))?
                }
                (None, None) => {
                    let files = build.context()?;
                    copy::select(&spec, &SourceRoot::Context(&files.context, &files.entries))?
                }
            };
            let files = cache_sources(ctx, state, &selection)?;
            Ok((selection, files, fetched))
        })();
        let (selection, files, _fetched) = match selected {
            Ok(selected) => selected,
            Err(e) => {
                // The step failed before it could be keyed: it still shows, and fails, as a
                // step (BuildKit's "failed to compute cache key").
                let e = at(e);
                build
                    .start_vertex(name, instruction.span.start_line)
                    .failed(e.to_string());
                return Err(e);
            }
        };
        let canonical = serde_json::json!({
            "copy": keyword,
            "from": from.as_ref().map_or("context", |fs| fs.identity.as_str()),
            "sources": spec.sources,
            "heredocs": spec.heredocs.iter().map(|h| (&h.name, &h.content)).collect::<Vec<_>>(),
            "dest": spec.dest,
            "workdir": spec.workdir,
            "chown": spec.chown,
            "chmod": spec.chmod,
            "link": spec.link,
            "parents": spec.parents,
            "excludes": spec.excludes,
            "unpack": spec.unpack,
        })
        .to_string();
        let key = CacheKey::new(&state.cache_key)
            .instruction(&canonical)
            .sources(files)
            .finish_explained();
        let step = Step {
            instruction,
            name,
            key,
            created_by,
            changes: Changes::Kiln,
        };
        layer_step(ctx, state, step, |active, _| {
            copy::apply(&selection, active.mount_point())?;
            Ok(Vec::new())
        })
    })()
    .map_err(at);
    let released = match source_snapshot {
        Some(snapshot) => snapshot.abort().map_err(Error::from),
        None => Ok(()),
    };
    result?;
    released
}

/// The cache inputs of a selection. Owner names in `--chown` are resolved in the destination's
/// passwd and group files, so only then is the current chain mounted to read them.
fn cache_sources(
    ctx: &StageCtx<'_, '_>,
    state: &StageState,
    selection: &copy::Selection,
) -> Result<Vec<crate::cache_key::SourceFile>> {
    let names = selection
        .chown
        .as_deref()
        .is_some_and(|c| c.split(':').any(|part| part.parse::<u32>().is_err()));
    if !names {
        return selection.cache_sources(None);
    }
    let dest = ctx.build.snapshotter.prepare(state.chain.as_ref())?;
    let files = selection.cache_sources(Some(dest.mount_point()));
    dest.abort()?;
    files
}

/// The expanded spec of a COPY or ADD, and its `--from`.
fn spec_of(
    ctx: &StageCtx<'_, '_>,
    state: &StageState,
    instruction: &Instruction,
) -> Result<(CopySpec, Option<String>)> {
    let (transfer, from, parents, is_add, checksum, unpack): (&Transfer, _, _, _, _, _) =
        match &instruction.kind {
            InstructionKind::Copy(c) => (&c.transfer, c.from.clone(), c.parents, false, None, None),
            InstructionKind::Add(a) => {
                (&a.transfer, None, false, true, a.checksum.clone(), a.unpack)
            }
            other => {
                return Err(Error::Unsupported {
                    location: ctx.build.location(instruction.span),
                    message: format!("{} is not COPY or ADD", other.keyword()),
                });
            }
        };
    let x = Expand::new(ctx, instruction);
    let env = state.expansion_env();
    let word = |w: &String| x.word(w, &env);
    let opt = |w: &Option<String>| w.as_ref().map(word).transpose();
    // Heredoc bodies expand with BuildKit's heredoc lexer, whatever the escape directive.
    let heredoc_lexer = Lexer::new('\\').skip_process_quotes(true);
    let heredocs = transfer
        .heredocs
        .iter()
        .map(|doc| {
            let content = if doc.expand {
                heredoc_lexer
                    .expand_word(&doc.content, &env)
                    .map_err(|e| ctx.build.dockerfile_error(e, instruction.span))?
            } else {
                doc.content.clone()
            };
            Ok(HeredocSource {
                name: doc.name.clone(),
                content,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let spec = CopySpec {
        sources: transfer.sources.iter().map(word).collect::<Result<_>>()?,
        dest: word(&transfer.dest)?,
        workdir: state.workdir(),
        chown: opt(&transfer.chown)?,
        chmod: opt(&transfer.chmod)?,
        link: transfer.link,
        parents,
        excludes: transfer.excludes.iter().map(word).collect::<Result<_>>()?,
        heredocs,
        is_add,
        checksum: opt(&checksum)?,
        unpack,
    };
    Ok((spec, from.filter(|f| !f.is_empty())))
}
