//! The registry commands: `pull`, `push`, `login` and `logout`, with docker's flags and
//! messages; and the push of a build's `--push` / `type=registry` output.

use crate::commands::{Access, open_store};
use crate::error::{CliError, CliResult};
use crate::progress::Step;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_oci::registry::{self, BlobStatus, Client, Progress, PullOptions, RegistryConfig};
use kiln_oci::{Digest, Image, Reference, Store};
use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

/// How registries are reached: kiln's config file plus `--insecure-registry`.
#[derive(Debug, Clone, Default, Args)]
pub struct RegistryFlags {
    /// Reach this registry (`host[:port]`) over plain HTTP; repeatable. Loopback registries
    /// always are.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
}

impl RegistryFlags {
    /// The config files' settings with these flags added.
    pub fn config(&self) -> CliResult<RegistryConfig> {
        let mut config = RegistryConfig::load()?;
        for host in &self.insecure_registries {
            config.add_insecure(host);
        }
        Ok(config)
    }

    fn client(&self) -> CliResult<Client> {
        Ok(Client::new(self.config()?)?)
    }
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: `name[:tag]`, `name@sha256:…` (Docker Hub when the name has no registry).
    #[arg(value_name = "NAME[:TAG|@DIGEST]")]
    pub name: String,
    /// The platform to pull from a multi-platform image (`os/arch[/variant]`; default: this
    /// machine's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Print only the image's name.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image to push: its name in the store is where it goes (`registry/repo[:tag]`).
    #[arg(value_name = "NAME[:TAG]")]
    pub name: String,
    /// Print only the pushed digest.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry (`host[:port]`; default: Docker Hub).
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
    /// Username (without it, asked for on the terminal).
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (visible to other users of the machine: prefer --password-stdin, or leave it
    /// out to be asked for it on the terminal, without echo).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin (needs --username).
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry (`host[:port]`; default: Docker Hub).
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
}

pub fn pull(root: &Option<PathBuf>, args: PullArgs) -> CliResult<ExitCode> {
    let reference = Reference::parse(&args.name)?;
    let store = open_store(root, Access::Write)?;
    let client = args.registry.client()?;
    let full = pull_image(
        &client,
        &store,
        &reference,
        args.platform.clone(),
        args.quiet,
        Say::Stdout,
    )?;
    super::print_stdout(&format!("{full}\n"))?;
    Ok(ExitCode::SUCCESS)
}

/// Where a pull's messages go: stdout for `kiln pull`, stderr for `kiln run`, whose stdout
/// belongs to the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Say {
    Stdout,
    Stderr,
}

impl Say {
    fn line(self, text: &str) {
        match self {
            Say::Stdout => println!("{text}"),
            Say::Stderr => eprintln!("{text}"),
        }
    }
}

/// Pulls `reference` into the store with docker's messages (unless `quiet`); returns the
/// image's full name, under which the store now holds it.
pub fn pull_image(
    client: &Client,
    store: &Store,
    reference: &Reference,
    platform: Option<String>,
    quiet: bool,
    say: Say,
) -> CliResult<Reference> {
    let full = reference.normalized();
    if !quiet {
        if reference.tag().is_none() && reference.digest().is_none() {
            say.line("Using default tag: latest");
        }
        let shown = full
            .tag()
            .map(str::to_string)
            .or_else(|| full.digest().map(Digest::to_string))
            .unwrap_or_default();
        say.line(&format!("{shown}: Pulling from {}", full.repository()));
    }
    // docker says "up to date" when the name already stood for the image the registry has.
    let before = store
        .find_image(&full.to_string())
        .ok()
        .map(|image| image.manifest_digest);
    let progress = Bars::new(quiet, say);
    let options = PullOptions { platform };
    let pulled = registry::pull(client, store, reference, &options, &progress);
    progress.clear();
    let pulled = pulled?;
    if !quiet {
        say.line(&format!("Digest: {}", pulled.digest));
        let status = if before.as_ref() == Some(&pulled.image.manifest_digest) {
            "Image is up to date for"
        } else {
            "Downloaded newer image for"
        };
        say.line(&format!("Status: {status} {full}"));
    }
    Ok(full)
}

pub fn push(root: &Option<PathBuf>, args: PushArgs) -> CliResult<ExitCode> {
    let reference = Reference::parse(&args.name)?;
    if reference.digest().is_some() {
        return Err(CliError::usage(format!(
            "{}: push a NAME[:TAG], not a digest",
            args.name
        )));
    }
    let target = reference.with_default_tag();
    let store = open_store(root, Access::Read)?;
    let image = store.find_image(&target.to_string())?;
    let client = args.registry.client()?;
    let full = target.normalized();
    if !args.quiet {
        println!(
            "The push refers to repository [{}/{}]",
            full.registry(),
            full.repository()
        );
    }
    let progress = Bars::new(args.quiet, Say::Stdout);
    let pushed = registry::push(&client, &store, &image, &target, &progress);
    progress.clear();
    let digest = pushed?;
    let line = if args.quiet {
        format!("{digest}\n")
    } else {
        format!(
            "{}: digest: {digest} size: {}\n",
            full.tag().unwrap_or("latest"),
            image.manifest_size
        )
    };
    super::print_stdout(&line)?;
    Ok(ExitCode::SUCCESS)
}

pub fn login(args: LoginArgs) -> CliResult<ExitCode> {
    let server = server(args.server.as_deref());
    let username = args
        .username
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty());
    // docker takes an empty -p as no password: it asks for one.
    let password = args.password.filter(|p| !p.is_empty());
    let prompts = prompts(
        username.is_some(),
        password.is_some(),
        args.password_stdin,
        std::io::stdin().is_terminal(),
    )?;
    if password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    let username = match username {
        Some(u) => u,
        None if prompts.username => ask_username(&server)?,
        None => String::new(),
    };
    if username.is_empty() {
        return Err(CliError::Usage {
            message: "login needs a username".into(),
            hint: Some("kiln login -u USER --password-stdin SERVER".into()),
        });
    }
    let password = if args.password_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::io("<stdin>", e))?;
        text.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = password {
        p
    } else if prompts.password {
        super::prompt::ask_hidden("Password: ")?
    } else {
        String::new()
    };
    if password.is_empty() {
        return Err(CliError::usage("the password is empty"));
    }
    let client = args.registry.client()?;
    if let Some(path) = registry::login(&client, &server, &username, &password)? {
        eprintln!(
            "WARNING! Your password will be stored unencrypted in {}.",
            path.display()
        );
    }
    super::print_stdout("Login Succeeded\n")?;
    Ok(ExitCode::SUCCESS)
}

/// What `login` has to ask for on the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Prompts {
    username: bool,
    password: bool,
}

/// Which of username and password `login` asks for, given what the command line holds and
/// whether stdin is a terminal to ask on; docker's refusals when it cannot ask.
fn prompts(
    username: bool,
    password: bool,
    password_stdin: bool,
    terminal: bool,
) -> CliResult<Prompts> {
    if password_stdin && !username {
        // stdin holds the password, so there is nowhere to read the username from.
        return Err(CliError::Usage {
            message: "Must provide --username with --password-stdin".into(),
            hint: Some("kiln login -u USER --password-stdin SERVER".into()),
        });
    }
    let prompts = Prompts {
        username: !username,
        password: !password && !password_stdin,
    };
    if (prompts.username || prompts.password) && !terminal {
        return Err(CliError::Usage {
            message: "Cannot perform an interactive login from a non TTY device".into(),
            hint: Some(
                "pass the password on stdin: kiln login -u USER --password-stdin SERVER".into(),
            ),
        });
    }
    Ok(prompts)
}

/// Asks for the username, offering the one stored for `server` (kept on an empty answer), as
/// docker does.
fn ask_username(server: &str) -> CliResult<String> {
    if server == kiln_oci::reference::DEFAULT_REGISTRY {
        super::print_stdout(
            "Log in with your Docker ID or email address to push and pull images from Docker \
             Hub. If you don't have a Docker ID, head over to https://hub.docker.com to create \
             one.\n",
        )?;
    }
    // Only a convenience: a config or credential helper that cannot be read offers none.
    let stored = registry::credentials::lookup(server)
        .ok()
        .flatten()
        .map(|(user, _)| user)
        .filter(|user| !user.is_empty() && user != "<token>");
    let prompt = match &stored {
        Some(user) => format!("Username ({user}): "),
        None => "Username: ".to_string(),
    };
    let answer = super::prompt::ask(&prompt)?.trim().to_string();
    Ok(match stored {
        Some(user) if answer.is_empty() => user,
        _ => answer,
    })
}

pub fn logout(args: LogoutArgs) -> CliResult<ExitCode> {
    let server = server(args.server.as_deref());
    let key = registry::credentials::server_key(&server);
    let text = if registry::logout(&server)? {
        format!("Removing login credentials for {key}\n")
    } else {
        format!("Not logged in to {key}\n")
    };
    super::print_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// A registry as the user wrote it (`https://host/` accepted, as docker does).
fn server(given: Option<&str>) -> String {
    let given = given.unwrap_or(kiln_oci::reference::DEFAULT_REGISTRY);
    let host = given
        .strip_prefix("https://")
        .or_else(|| given.strip_prefix("http://"))
        .unwrap_or(given);
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        other => other.to_string(),
    }
}

/// A build's `--push` / `type=registry` output: `names` (or, without any, every tag of the
/// build) pushed; the digest is logged on the export step.
pub fn push_output(
    store: &Store,
    image: &Image,
    names: &[Reference],
    tags: &[Reference],
    config: &RegistryConfig,
    step: &Step<'_>,
) -> CliResult<()> {
    let client = Client::new(config.clone())?;
    let targets = if names.is_empty() { tags } else { names };
    for target in targets {
        let progress = StepProgress(step);
        let digest = registry::push(&client, store, image, target, &progress)?;
        step.log(format!(
            "pushing {} with digest {digest} done",
            target.normalized()
        ));
    }
    Ok(())
}

struct StepProgress<'s, 'p>(&'s Step<'p>);

impl Progress for StepProgress<'_, '_> {
    fn finished(&self, digest: &Digest, status: BlobStatus) {
        self.0
            .log(format!("{}: {}", digest.short(), status.message()));
    }
}

/// Per-blob progress: a bar each on a terminal, a line per finished blob otherwise.
struct Bars {
    quiet: bool,
    say: Say,
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Bars {
    fn new(quiet: bool, say: Say) -> Bars {
        let multi = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Bars {
            quiet,
            say,
            multi,
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn clear(&self) {
        if let Some(multi) = &self.multi {
            let _ = multi.clear();
        }
    }
}

impl Progress for Bars {
    fn started(&self, digest: &Digest, size: u64) {
        let Some(multi) = &self.multi else { return };
        let bar = multi.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template("{prefix}: {bar:30} {bytes}/{total_bytes} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(digest.short().to_string());
        self.bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest.clone(), bar);
    }

    fn advanced(&self, digest: &Digest, done: u64) {
        if let Some(bar) = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
        {
            bar.set_position(done);
        }
    }

    fn finished(&self, digest: &Digest, status: BlobStatus) {
        if self.quiet {
            return;
        }
        let bar = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(digest);
        match (&self.multi, bar) {
            (Some(multi), bar) => {
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
                let _ = multi.println(format!("{}: {}", digest.short(), status.message()));
            }
            (None, _) => self
                .say
                .line(&format!("{}: {}", digest.short(), status.message())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(user: bool, pass: bool, stdin: bool, tty: bool) -> Result<(bool, bool), String> {
        prompts(user, pass, stdin, tty)
            .map(|p| (p.username, p.password))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_terminal_is_asked_what_the_command_line_lacks() {
        assert_eq!(asked(false, false, false, true), Ok((true, true)));
        assert_eq!(asked(true, false, false, true), Ok((false, true)));
        assert_eq!(asked(false, true, false, true), Ok((true, false)));
        assert_eq!(asked(true, true, false, true), Ok((false, false)));
        assert_eq!(asked(true, false, true, true), Ok((false, false)));
    }

    #[test]
    fn without_a_terminal_nothing_is_asked() {
        assert_eq!(asked(true, true, false, false), Ok((false, false)));
        assert_eq!(asked(true, false, true, false), Ok((false, false)));
        let refused = Err("Cannot perform an interactive login from a non TTY device".to_string());
        assert_eq!(asked(false, false, false, false), refused);
        assert_eq!(asked(true, false, false, false), refused);
        assert_eq!(asked(false, true, false, false), refused);
    }

    #[test]
    fn password_stdin_needs_the_username_on_the_command_line() {
        let refused = Err("Must provide --username with --password-stdin".to_string());
        assert_eq!(asked(false, false, true, true), refused);
        assert_eq!(asked(false, false, true, false), refused);
    }

    #[test]
    fn docker_hub_spellings_are_one_server() {
        assert_eq!(server(None), "docker.io");
        assert_eq!(server(Some("https://index.docker.io/v1/")), "docker.io");
        assert_eq!(server(Some("localhost:5000")), "localhost:5000");
    }
}
