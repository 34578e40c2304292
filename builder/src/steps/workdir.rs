//! WORKDIR: sets the working directory (relative to the previous one) and, as BuildKit does,
//! creates it in a layer of its own, owned by the stage's USER.

use super::{Changes, Expand, Step, layer_step, record_config_step};
use crate::cache_key::CacheKey;
use crate::error::{Error, Result};
use crate::inroot;
use crate::path::clean;
use crate::stage::StageCtx;
use crate::state::StageState;
use kiln_grammar::instructions::Instruction;
use std::path::Path;

pub fn workdir(
    ctx: &mut StageCtx<'_, '_>,
    state: &mut StageState,
    instruction: &Instruction,
    path: &str,
) -> Result<()> {
    let expanded = Expand::new(ctx, instruction).word(path, &state.expansion_env())?;
    let dir = normalize(&state.workdir(), &expanded);
    state.container_mut().working_dir = Some(dir.clone());
    let created_by = format!("WORKDIR {dir}");
    if dir == "/" {
        // The root always exists: BuildKit records the change without a layer.
        return record_config_step(ctx, state, created_by);
    }
    let user = state.user();
    let name = ctx.next_title(state, instruction);
    let key = CacheKey::new(&state.cache_key)
        .instruction(&format!("{created_by}\nowner={user}"))
        .finish_explained();
    let location = ctx.build.location(instruction.span);
    let step = Step {
        instruction,
        name,
        key,
        created_by,
        changes: Changes::Kiln,
    };
    layer_step(ctx, state, step, |active, _| {
        let root = active.mount_point();
        let (uid, gid) = owner(root, &user, &location)?;
        inroot::make_dirs(root, &dir, uid, gid).map_err(|e| Error::io(Path::new(&dir), e))?;
        Ok(Vec::new())
    })
}

/// The uid and gid of `user` (`name|uid[:group|gid]`, empty for root) in the root filesystem.
pub fn owner(root: &Path, user: &str, location: &str) -> Result<(u32, u32)> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let read =
        |path: &str| inroot::read_text(root, path).map_err(|e| Error::io(Path::new(path), e));
    let passwd = read("/etc/passwd")?;
    let group = read("/etc/group")?;
    let resolved =
        kiln_runner::user::resolve(user, &passwd, &group).map_err(|source| Error::User {
            location: location.to_string(),
            source,
        })?;
    Ok((resolved.uid, resolved.gid))
}

/// BuildKit's `NormalizeWorkdir`: a relative path continues from the current directory; the
/// result is absolute and clean.
pub fn normalize(current: &str, path: &str) -> String {
    if path.starts_with('/') {
        clean(path)
    } else {
        clean(&format!("/{current}/{path}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdirs_continue_from_the_previous_one() {
        assert_eq!(normalize("/", "app"), "/app");
        assert_eq!(normalize("/app", "src"), "/app/src");
        assert_eq!(normalize("/app", "/srv/"), "/srv");
        assert_eq!(normalize("/app", "../x/./y"), "/x/y");
        assert_eq!(normalize("/", "../.."), "/");
        assert_eq!(normalize("", "a"), "/a");
    }
}
