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
    /// Username.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (visible to other users of the machine: prefer --password-stdin).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin.
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
    let username = match args.username {
        Some(u) if !u.is_empty() => u,
        _ => {
            return Err(CliError::Usage {
                message: "login needs a username".into(),
                hint: Some("kiln login -u USER --password-stdin SERVER".into()),
            });
        }
    };
    let password = if args.password_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::io("<stdin>", e))?;
        text.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else {
        return Err(CliError::Usage {
            message: "login needs a password".into(),
            hint: Some("pass it on stdin with --password-stdin, or with -p".into()),
        });
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
