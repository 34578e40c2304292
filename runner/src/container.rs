//! The first process inside the sandbox (PID 1 of its namespace), from the `clone` to the
//! `execve` of the command: it waits for the helper to map ids and place it in its cgroups,
//! builds the filesystem, switches user, drops privileges, installs seccomp and execs — or, with
//! `Spec::init`, forks the command and stays as its reaping init.

use nix::unistd::{ForkResult, fork, read, sethostname, setsid};
use std::convert::Infallible;
use std::fs::File;
use std::os::fd::{BorrowedFd, FromRawFd, RawFd};
use std::path::Path;

use crate::error::{Error, Result, SetupContext};
use crate::mounts::{self, EtcFiles};
use crate::protocol::ChildMessage;
use crate::seccomp::Filters;
use crate::spec::{Network, Spec};
use crate::{init, network, process, tty};

/// What the helper hands the sandboxed process (copied into it by `clone`).
pub(crate) struct Context<'a> {
    pub spec: &'a Spec,
    pub etc: &'a EtcFiles,
    /// Read end of the go-ahead pipe.
    pub sync: RawFd,
    /// Write end of the message pipe (close-on-exec).
    pub messages: RawFd,
    pub console: Option<&'a Path>,
    pub tty_slave: Option<RawFd>,
    pub rootless: bool,
    pub allows_setgroups: bool,
    pub filters: &'a Filters,
}

/// The entry point after `clone`; never returns.
pub(crate) fn main(ctx: &Context<'_>) -> ! {
    // The helper's own descriptors (report pipe, signalfd, terminal master, …) and anything
    // leaked to it must not be held by the sandbox.
    let mut keep = vec![ctx.sync, ctx.messages];
    keep.extend(ctx.tty_slave);
    crate::fds::close_all_except(&keep);
    // SAFETY: the message pipe's write end was duplicated into this process by clone and is
    // owned by nothing else here.
    let mut messages = unsafe { File::from_raw_fd(ctx.messages) };
    let err = match run(ctx, &mut messages) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let code = err.exit_code();
    ChildMessage::Failed(err.into()).send(&mut messages);
    // SAFETY: _exit ends this process at once, skipping destructors that belong to the helper.
    unsafe { libc::_exit(i32::from(code)) }
}

/// The sandbox must not outlive its helper (killed with SIGKILL, it cannot clean up, but its
/// sandbox at least goes with it). The kernel clears this setting whenever credentials change,
/// hence the second call after the user switch.
fn die_with_helper() -> Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .step(|| "prctl(PR_SET_PDEATHSIG)".into())
}

fn run(ctx: &Context<'_>, messages: &mut File) -> Result<Infallible> {
    die_with_helper()?;
    // A session of its own, as runc gives every container: a Ctrl-C typed at the caller's
    // terminal then reaches the helper alone, which forwards it exactly once, and reading a
    // terminal on stdin is no background-job read that would stop the process.
    setsid().step(|| "starting a session".into())?;
    wait_for_go(ctx.sync)?;
    let spec = ctx.spec;
    let console = ctx.console;
    let created = if spec.isolation.is_namespaced() {
        sethostname(&spec.hostname).step(|| format!("setting the hostname {:?}", spec.hostname))?;
        if spec.network == Network::None {
            network::bring_up_loopback()?;
        }
        mounts::setup(spec, ctx.etc, console, ctx.rootless)?
    } else {
        crate::isolation::enter(spec, ctx.etc, console)?
    };
    ChildMessage::Created(created).send(messages);

    let user = process::resolve_user(spec)?;
    process::ensure_cwd(&spec.cwd)?;
    let env = spec.effective_env(&user.home);
    process::drop_privileges(&user, ctx.allows_setgroups)?;
    die_with_helper()?;
    process::enter_cwd(&spec.cwd)?;

    if !spec.init {
        ctx.filters.install()?;
        return Err(exec_command(ctx, &env));
    }
    let signals = init::block_signals();
    ctx.filters.install()?;
    // SAFETY: this process is single-threaded (a fresh clone of the single-threaded helper).
    match unsafe { fork() }.step(|| "starting the command under init".into())? {
        ForkResult::Child => {
            let err = exec_command(ctx, &env);
            let code = err.exit_code();
            ChildMessage::Failed(err.into()).send(messages);
            // SAFETY: ends the forked command process without running the init's destructors.
            unsafe { libc::_exit(i32::from(code)) }
        }
        ForkResult::Parent { child } => {
            // Shows as `init` in the sandbox's process list rather than the helper's name.
            let _ = nix::sys::prctl::set_name(c"init");
            // The init holds the pipe to the helper: the command, running as the same user with
            // the same capabilities, must not be able to ptrace it and speak in its name.
            nix::sys::prctl::set_dumpable(false).step(|| "prctl(PR_SET_DUMPABLE)".into())?;
            init::run(child, signals, messages)
        }
    }
}

/// Blocks until the helper has finished placing this process (one byte), or has given up (EOF).
fn wait_for_go(fd: RawFd) -> Result<()> {
    let mut byte = [0u8; 1];
    loop {
        // SAFETY: `fd` is the go-ahead pipe's read end, open in this process.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        match read(borrowed, &mut byte) {
            Ok(1) => break,
            Ok(_) => return Err(Error::setup("waiting for the helper", "it gave up")),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(Error::setup("waiting for the helper", e.desc())),
        }
    }
    // SAFETY: the pipe is not used again.
    unsafe {
        libc::close(fd);
    }
    Ok(())
}

fn exec_command(ctx: &Context<'_>, env: &[String]) -> Error {
    if let Some(slave) = ctx.tty_slave {
        // SAFETY: the pty slave was duplicated into this process by clone and stays open.
        let slave = unsafe { BorrowedFd::borrow_raw(slave) };
        if let Err(e) = tty::attach(slave) {
            return e;
        }
    }
    process::exec(&ctx.spec.argv, env)
}
