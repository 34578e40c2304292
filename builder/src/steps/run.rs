//! RUN: a command in the sandbox over a snapshot of the stage, whose changes become a layer.
//!
//! Shell form goes through the stage's SHELL, exec form runs as written. Heredocs follow
//! BuildKit's `dispatchRun`: `RUN <<EOF` alone runs the body as a script through the shell (a
//! body starting with `#!` is written to a file and run by its interpreter); other heredoc
//! commands get their bodies appended, for the shell to read as heredocs itself. `--mount`s
//! are [`super::mounts`]'. The environment is the image's plus the build args in scope (and
//! proxy args), which the history records as BuildKit does (`RUN |1 A=b /bin/sh -c …`).

use super::mounts::RunMounts;
use crate::cache_key::CacheKey;
use crate::error::{Error, Result};
use crate::history::run_command_string;
use crate::sandbox;
use crate::stage::StageCtx;
use crate::state::StageState;
use kiln_grammar::instructions::{
    Command, Instruction, NetworkMode, RunInstruction, SecurityMode, heredoc_reference,
};
use kiln_runner::{BindMount, Network, Spec};
use kiln_snapshotter::SANDBOX_MOUNT_POINTS;
use std::path::PathBuf;

/// Where a heredoc script with a shebang is mounted (read-only), as in BuildKit.
const SCRIPT_DIR: &str = "/dev/pipes";

/// A heredoc body to run as a file.
struct Script {
    name: String,
    body: String,
}

pub fn run(
    ctx: &mut StageCtx<'_, '_>,
    state: &mut StageState,
    instruction: &Instruction,
    run: &RunInstruction,
) -> Result<()> {
    let location = ctx.build.location(instruction.span);
    if run.security == SecurityMode::Insecure {
        return Err(Error::Unsupported {
            location,
            message: "RUN --security=insecure is not supported: kiln runs every step sandboxed"
                .into(),
        });
    }
    let (argv, script) = command(state, run);
    let mounts = RunMounts::parse(ctx, state, instruction, run)?;
    let network = match run.network {
        NetworkMode::Default => ctx.build.request.network,
        NetworkMode::None => Network::None,
        NetworkMode::Host => Network::Host,
    };
    crate::isolation::check_run(ctx.build.request.isolation, network, &location)?;
    let created_by = format!(
        "RUN {} # buildkit",
        run_command_string(&state.build_args(), &argv)
    );
    let user = state.user();
    let cwd = state.workdir();
    let canonical = serde_json::json!({
        "run": argv,
        "script": script.as_ref().map(|s| (&s.name, &s.body)),
        "network": format!("{network:?}"),
        "mounts": mounts.canonical(),
        "user": user,
        "workdir": cwd,
    })
    .to_string();
    let key = CacheKey::new(&state.cache_key)
        .instruction(&canonical)
        .variables(super::pairs(&state.key_variables()))
        .sources(mounts.key_sources())
        .finish_explained();
    let env = state.run_env(&ctx.build.plan.proxy_args);
    let mut name = ctx.next_title(state, instruction);
    if let Some(summary) = heredoc_summary(run) {
        name.push_str(&format!(" ({summary})"));
    }
    let build = ctx.build;
    let shown_instruction = instruction.original.trim().to_string();
    crate::isolation::run_layer_step(
        ctx,
        state,
        instruction,
        name,
        key,
        created_by,
        |active, vertex| {
            let mut spec = Spec::new(active.mount_point(), argv.clone());
            spec.env = env;
            spec.cwd = PathBuf::from(&cwd);
            spec.user = user;
            spec.network = network;
            spec.isolation = build.request.isolation;
            spec.limits = build.request.limits;
            // Released after the run; on an early return, dropped, which releases it too.
            let attached = mounts.attach(build, &mut spec)?;
            // Kept alive until the run ends: the script's directory is bind-mounted.
            let script_dir = match &script {
                Some(script) => {
                    let dir = tempfile::Builder::new()
                        .prefix("heredoc-")
                        .tempdir_in(build.store.tmp_dir())
                        .map_err(|e| Error::io(build.store.tmp_dir(), e))?;
                    let path = dir.path().join(&script.name);
                    write_script(&path, &script.body)?;
                    spec.mounts.push(BindMount {
                        source: dir.path().to_path_buf(),
                        target: PathBuf::from(SCRIPT_DIR),
                        readonly: true,
                    });
                    Some(dir)
                }
                None => None,
            };
            let finished = sandbox::run(&spec, vertex, &build.cancelled).map_err(|source| {
                if build.cancelled.load(std::sync::atomic::Ordering::SeqCst) {
                    return Error::Cancelled;
                }
                match source {
                    // A command that cannot be started fails the step like a failing command,
                    // with docker's exit codes (127 not found, 126 not executable).
                    kiln_runner::Error::Exec { .. } => Error::StepFailed {
                        location: location.clone(),
                        instruction: shown_instruction.clone(),
                        command: argv.join(" "),
                        code: i32::from(source.exit_code()),
                        output: vec![source.to_string()],
                    },
                    source => Error::Sandbox {
                        location: location.clone(),
                        instruction: shown_instruction.clone(),
                        source,
                    },
                }
            })?;
            drop(script_dir);
            attached.release()?;
            build.check_cancelled()?;
            let code = finished.outcome.status.code();
            if code != 0 || !finished.outcome.status.success() {
                let mut output = finished.tail;
                if finished.outcome.oom_killed {
                    output.push("killed for exceeding the memory limit (--memory)".into());
                }
                return Err(Error::StepFailed {
                    location: location.clone(),
                    instruction: shown_instruction.clone(),
                    command: argv.join(" "),
                    code,
                    output,
                });
            }
            // What the sandbox mounts over the root, and the mount points it had to create,
            // are not the command's doing.
            let created = finished.outcome.created_mountpoints.iter();
            Ok(SANDBOX_MOUNT_POINTS
                .iter()
                .map(|p| p.to_string())
                .chain(created.map(|p| p.to_string_lossy().trim_start_matches('/').to_string()))
                .filter(|p| !p.is_empty())
                .collect())
        },
    )
}

/// BuildKit's `summarizeHeredoc` for the title of a `RUN <<EOF`: the body's first line, with
/// `...` when there are more.
fn heredoc_summary(run: &RunInstruction) -> Option<String> {
    let Command::Shell(text) = &run.command else {
        return None;
    };
    let [doc] = run.heredocs.as_slice() else {
        return None;
    };
    heredoc_reference(text.trim()).filter(|name| *name == doc.name)?;
    let body = doc.content.trim().replace("\r\n", "\n");
    let mut lines = body.split('\n');
    let first = lines.next().unwrap_or_default().to_string();
    Some(if lines.next().is_some() {
        format!("{first}...")
    } else {
        first
    })
}

/// The argv of the RUN, and the script file it needs, if any.
fn command(state: &StageState, run: &RunInstruction) -> (Vec<String>, Option<Script>) {
    let text = match &run.command {
        Command::Exec(argv) => return (argv.clone(), None),
        Command::Shell(text) => text,
    };
    let mut shell = state.shell();
    let single = match run.heredocs.as_slice() {
        [only] => heredoc_reference(text.trim()).filter(|name| *name == only.name),
        _ => None,
    };
    match (single, run.heredocs.first()) {
        (Some(_), Some(doc)) if doc.content.starts_with("#!") => {
            shell.push(format!("{SCRIPT_DIR}/{}", doc.name));
            let script = Script {
                name: doc.name.clone(),
                body: doc.content.clone(),
            };
            (shell, Some(script))
        }
        (Some(_), Some(doc)) => {
            shell.push(doc.content.clone());
            (shell, None)
        }
        _ => {
            let mut full = text.clone();
            for doc in &run.heredocs {
                full.push('\n');
                full.push_str(&doc.content);
                full.push_str(&doc.name);
            }
            shell.push(full);
            (shell, None)
        }
    }
}

fn write_script(path: &std::path::Path, body: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).map_err(|e| Error::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_grammar::ast::Heredoc;
    use kiln_oci::ImageConfig;

    fn heredoc(name: &str, content: &str) -> Heredoc {
        Heredoc {
            name: name.into(),
            content: content.into(),
            expand: true,
            chomp: false,
            file_descriptor: None,
        }
    }

    fn run_of(text: &str, heredocs: Vec<Heredoc>) -> RunInstruction {
        RunInstruction {
            command: Command::Shell(text.into()),
            mounts: Vec::new(),
            network: NetworkMode::Default,
            security: SecurityMode::Sandbox,
            heredocs,
        }
    }

    #[test]
    fn heredoc_commands_as_buildkit_runs_them() {
        let state = StageState::new(ImageConfig::for_host(), Vec::new(), None);
        let (argv, script) = command(&state, &run_of("echo hi", vec![]));
        assert_eq!(argv, ["/bin/sh", "-c", "echo hi"]);
        assert!(script.is_none());

        let (argv, _) = command(
            &state,
            &run_of("<<EOF", vec![heredoc("EOF", "echo a\necho b\n")]),
        );
        assert_eq!(argv, ["/bin/sh", "-c", "echo a\necho b\n"]);

        let (argv, script) = command(
            &state,
            &run_of("<<EOF", vec![heredoc("EOF", "#!/bin/busybox sh\necho a\n")]),
        );
        assert_eq!(argv, ["/bin/sh", "-c", "/dev/pipes/EOF"]);
        assert_eq!(
            script.map(|s| s.body),
            Some("#!/bin/busybox sh\necho a\n".into())
        );

        let (argv, _) = command(
            &state,
            &run_of("cat <<EOF > /x", vec![heredoc("EOF", "hello\n")]),
        );
        assert_eq!(argv, ["/bin/sh", "-c", "cat <<EOF > /x\nhello\nEOF"]);
    }
}
