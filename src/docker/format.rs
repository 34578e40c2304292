//! docker's output formats over kiln's data: the `docker images` table, `json` lines and
//! templates; `docker inspect`'s JSON and templates; the `version` and `info` pages.

use super::template::{Template, is_template, object};
use crate::commands::store::{human, listing};
use crate::error::{CliError, CliResult};
use kiln_oci::{Image, Reference, Store};
use serde::Serialize;
use serde_json::{Value, json};

/// A `--format` value that is not a template, `table` or `json`.
fn template_error(e: impl std::fmt::Display) -> CliError {
    CliError::Usage {
        message: format!("template parsing error: {e}"),
        hint: None,
    }
}

/// Renders `format` over each item, a line each, the way docker's formatter does: a
/// `table ` prefix adds a header row (the template rendered over the column titles) and aligns
/// the tab-separated cells; `\t` and `\n` written in the format stand for tab and newline.
pub fn render_items(format: &str, items: &[Value], titles: &Value) -> CliResult<String> {
    let (table, body) = match format.strip_prefix("table") {
        Some(rest) if rest.is_empty() || rest.starts_with(' ') => (true, rest.trim()),
        _ => (false, format),
    };
    let body = body.replace("\\t", "\t").replace("\\n", "\n");
    let template = Template::parse(&body).map_err(template_error)?;
    let mut lines = Vec::new();
    for item in items {
        lines.push(template.render(item).map_err(template_error)?);
    }
    if !table {
        return Ok(lines.iter().map(|l| format!("{l}\n")).collect());
    }
    let header = template.render(titles).map_err(template_error)?;
    let split = |l: &str| -> Vec<String> { l.split('\t').map(str::to_string).collect() };
    let header = split(&header);
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let rows: Vec<Vec<String>> = lines.iter().map(|l| split(l)).collect();
    Ok(human::table(&header, &rows))
}

/// The options of `docker images` that shape its output.
pub struct ImagesView<'a> {
    pub repository: Option<&'a str>,
    pub filters: &'a [String],
    pub format: Option<&'a str>,
    pub digests: bool,
    pub no_trunc: bool,
    pub quiet: bool,
}

/// `docker images`: kiln's image list (its `json` lines, docker's fields) filtered and shown
/// as a table, json lines, ids or a template.
pub fn images(store: &Store, view: &ImagesView<'_>) -> CliResult<String> {
    let lines = listing::images(store, view.repository, true, false)?;
    let mut items = Vec::new();
    for line in lines.lines() {
        let mut item: Value = serde_json::from_str(line)
            .map_err(|e| CliError::usage(format!("cannot read the image list: {e}")))?;
        if let Value::Object(map) = &mut item {
            let size = map.get("Size").cloned().unwrap_or(Value::Null);
            map.insert("VirtualSize".into(), size);
            map.insert("SharedSize".into(), "N/A".into());
            map.insert("UniqueSize".into(), "N/A".into());
            let digest = repo_digest(store, map);
            map.insert("Digest".into(), digest.into());
            if view.no_trunc {
                let short = map.get("ID").and_then(Value::as_str).unwrap_or_default();
                if let Ok(image) = store.find_image(short) {
                    map.insert("ID".into(), image.id.to_string().into());
                }
            }
        }
        items.push(item);
    }
    for filter in view.filters {
        items = apply_filter(store, items, filter)?;
    }
    let field = |item: &Value, key: &str| item[key].as_str().unwrap_or_default().to_string();
    if view.quiet {
        let mut seen = std::collections::BTreeSet::new();
        return Ok(items
            .iter()
            .map(|i| field(i, "ID"))
            .filter(|id| seen.insert(id.clone()))
            .map(|id| format!("{id}\n"))
            .collect());
    }
    match view.format {
        Some("json") => Ok(items.iter().map(|i| format!("{i}\n")).collect()),
        Some(f) if is_template(f) => render_items(f, &items, &image_titles()),
        None | Some("table") => {
            let mut header = vec!["REPOSITORY", "TAG"];
            if view.digests {
                header.push("DIGEST");
            }
            header.extend(["IMAGE ID", "CREATED", "SIZE"]);
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| {
                    let mut row = vec![field(i, "Repository"), field(i, "Tag")];
                    if view.digests {
                        row.push(field(i, "Digest"));
                    }
                    row.extend([field(i, "ID"), field(i, "CreatedSince"), field(i, "Size")]);
                    row
                })
                .collect();
            Ok(human::table(&header, &rows))
        }
        Some(other) => Err(template_error(format!(
            "template: :1: function {other:?} not defined"
        ))),
    }
}

/// docker's DIGEST for one `images` row: the digest the row's repository knows the image by
/// (its RepoDigests entry there), `<none>` for an image never pulled from or pushed to it (a
/// local build) and for a dangling one.
fn repo_digest(store: &Store, row: &serde_json::Map<String, Value>) -> String {
    let text = |key: &str| row.get(key).and_then(Value::as_str).unwrap_or_default();
    let (repository, tag) = (text("Repository"), text("Tag"));
    if repository == "<none>" {
        return "<none>".into();
    }
    store
        .find_image(&format!("{repository}:{tag}"))
        .ok()
        .and_then(|image| {
            image.repo_digests.iter().find_map(|entry| {
                let entry = Reference::parse(entry).ok()?;
                (entry.name() == repository).then(|| entry.digest().map(|d| d.to_string()))?
            })
        })
        .unwrap_or_else(|| "<none>".into())
}

/// The column titles `docker images --format 'table …'` prints for each field.
fn image_titles() -> Value {
    json!({
        "Containers": "CONTAINERS",
        "CreatedAt": "CREATED AT",
        "CreatedSince": "CREATED",
        "Digest": "DIGEST",
        "ID": "IMAGE ID",
        "Repository": "REPOSITORY",
        "SharedSize": "SHARED SIZE",
        "Size": "SIZE",
        "Tag": "TAG",
        "UniqueSize": "UNIQUE SIZE",
        "VirtualSize": "VIRTUAL SIZE",
    })
}

/// `--filter KEY=VALUE` of `docker images`: dangling, reference (a glob over `repo[:tag]`),
/// before and since (an image's age).
fn apply_filter(store: &Store, items: Vec<Value>, filter: &str) -> CliResult<Vec<Value>> {
    let (key, value) = filter.split_once('=').ok_or_else(|| {
        CliError::usage(format!(
            "bad format of filter (expected name=value): {filter}"
        ))
    })?;
    let created = |item: &Value| item["CreatedAt"].as_str().unwrap_or_default().to_string();
    let keep: Box<dyn Fn(&Value) -> bool> = match key {
        "dangling" => {
            let dangling = value == "true" || value == "1";
            Box::new(move |i| (i["Repository"] == "<none>") == dangling)
        }
        "reference" => {
            let pattern = value.to_string();
            Box::new(move |i| {
                let repo = i["Repository"].as_str().unwrap_or_default();
                let tag = i["Tag"].as_str().unwrap_or_default();
                glob(&pattern, repo) || glob(&pattern, &format!("{repo}:{tag}"))
            })
        }
        "before" | "since" => {
            let image = store.find_image(value)?;
            let when = image.config.created.clone().unwrap_or_default();
            let before = key == "before";
            Box::new(move |i| {
                let c = created(i);
                if before { c < when } else { c > when }
            })
        }
        other => {
            return Err(CliError::usage(format!(
                "invalid filter '{other}': kiln filters images by dangling, reference, before \
                 and since"
            )));
        }
    };
    Ok(items.into_iter().filter(|i| keep(i)).collect())
}

/// Go's `path.Match` for the patterns image references use: `*` (not across `/`) and `?`.
fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len())
                .take_while(|&i| i == 0 || t[i - 1] != '/')
                .any(|i| go(rest, &t[i..])),
            Some(('?', rest)) => t.first().is_some_and(|&c| c != '/') && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

/// `docker image inspect`'s object for one image: kiln's inspect output plus the fields docker
/// adds that kiln has no counterpart for.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerInspect<'a> {
    #[serde(flatten)]
    base: listing::Inspect<'a>,
    graph_driver: Value,
    metadata: Value,
}

pub fn inspect(image: &Image) -> DockerInspect<'_> {
    DockerInspect {
        base: listing::inspect(image),
        graph_driver: json!({"Data": null, "Name": "kiln"}),
        metadata: json!({"LastTagTime": "0001-01-01T00:00:00Z"}),
    }
}

/// The value templates see for an image: docker renders them over its typed struct, where an
/// unset Config field is an empty slice, map or string rather than a missing key.
pub fn inspect_value(image: &Image) -> CliResult<Value> {
    let mut value = serde_json::to_value(inspect(image))
        .map_err(|e| CliError::usage(format!("cannot encode the image: {e}")))?;
    if let Some(Value::Object(config)) = value.get_mut("Config") {
        let zeros = [
            ("User", json!("")),
            ("ExposedPorts", json!({})),
            ("Env", json!([])),
            ("Entrypoint", json!([])),
            ("Cmd", json!([])),
            ("Volumes", json!({})),
            ("WorkingDir", json!("")),
            ("Labels", json!({})),
            ("OnBuild", json!([])),
            ("StopSignal", json!("")),
            ("Shell", json!([])),
        ];
        for (key, zero) in zeros {
            config.entry(key).or_insert(zero);
        }
    }
    Ok(value)
}

/// JSON indented as docker prints it (four spaces).
pub fn docker_json<T: Serialize>(value: &T) -> CliResult<String> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value
        .serialize(&mut serializer)
        .map_err(|e| CliError::usage(format!("cannot encode JSON: {e}")))?;
    let mut text = String::from_utf8_lossy(&out).into_owned();
    text.push('\n');
    Ok(text)
}

/// The platform kiln runs on, in Go's names (`amd64`, `arm64`).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The API version kiln's docker front answers to (docker 28's).
pub const API_VERSION: &str = "1.50";

/// `docker version`'s data, with Go's field names (what templates use).
pub fn version_value() -> Value {
    let version = env!("CARGO_PKG_VERSION");
    let platform = || json!({"Name": "kiln"});
    object(vec![
        (
            "Client",
            object(vec![
                ("Platform", platform()),
                ("Version", json!(version)),
                ("APIVersion", json!(API_VERSION)),
                ("DefaultAPIVersion", json!(API_VERSION)),
                ("GitCommit", json!("kiln")),
                ("GoVersion", json!("none (kiln is written in Rust)")),
                ("Os", json!(std::env::consts::OS)),
                ("Arch", json!(go_arch())),
                ("BuildTime", json!("")),
                ("Context", json!("default")),
            ]),
        ),
        (
            "Server",
            object(vec![
                ("Platform", json!({"Name": "kiln (daemonless)"})),
                (
                    "Components",
                    json!([{
                        "Name": "Engine",
                        "Version": version,
                        "Details": {
                            "ApiVersion": API_VERSION,
                            "MinAPIVersion": "1.24",
                            "Os": std::env::consts::OS,
                            "Arch": go_arch(),
                            "Experimental": "false",
                        }
                    }]),
                ),
                ("Version", json!(version)),
                ("APIVersion", json!(API_VERSION)),
                ("MinAPIVersion", json!("1.24")),
                ("GitCommit", json!("kiln")),
                ("GoVersion", json!("none (kiln is written in Rust)")),
                ("Os", json!(std::env::consts::OS)),
                ("Arch", json!(go_arch())),
                ("KernelVersion", json!(kernel_version())),
                ("Experimental", json!(false)),
                ("BuildTime", json!("")),
            ]),
        ),
    ])
}

pub fn version_text(v: &Value) -> String {
    let c = &v["Client"];
    let s = &v["Server"];
    let get = |v: &Value, k: &str| super::template::go_string(&v[k]);
    let client = [
        ("Version", get(c, "Version")),
        ("API version", get(c, "APIVersion")),
        ("Go version", get(c, "GoVersion")),
        ("Git commit", get(c, "GitCommit")),
        ("OS/Arch", format!("{}/{}", get(c, "Os"), get(c, "Arch"))),
        ("Context", get(c, "Context")),
    ];
    let engine = [
        ("Version", get(s, "Version")),
        (
            "API version",
            format!(
                "{} (minimum version {})",
                get(s, "APIVersion"),
                get(s, "MinAPIVersion")
            ),
        ),
        ("OS/Arch", format!("{}/{}", get(s, "Os"), get(s, "Arch"))),
        ("Kernel", get(s, "KernelVersion")),
        ("Experimental", get(s, "Experimental")),
    ];
    let mut out = format!("Client: {}\n", get(&c["Platform"], "Name"));
    for (k, val) in client {
        out.push_str(&format!(" {:<18}{val}\n", format!("{k}:")));
    }
    out.push_str(&format!(
        "\nServer: {}\n Engine:\n",
        get(&s["Platform"], "Name")
    ));
    for (k, val) in engine {
        out.push_str(&format!("  {:<17}{val}\n", format!("{k}:")));
    }
    out
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// What `docker info` reports, from the store and the machine.
pub struct InfoInputs {
    pub images: usize,
    pub containers: usize,
    pub running: usize,
    pub root: String,
    pub driver: String,
}

/// `docker info`'s data, with Go's field names.
pub fn info_value(inputs: &InfoInputs) -> Value {
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    object(vec![
        ("ID", json!("kiln")),
        ("Containers", json!(inputs.containers)),
        ("ContainersRunning", json!(inputs.running)),
        ("ContainersPaused", json!(0)),
        (
            "ContainersStopped",
            json!(inputs.containers - inputs.running),
        ),
        ("Images", json!(inputs.images)),
        ("Driver", json!(inputs.driver)),
        ("DockerRootDir", json!(inputs.root)),
        ("ServerVersion", json!(env!("CARGO_PKG_VERSION"))),
        ("KernelVersion", json!(kernel_version())),
        ("OperatingSystem", json!(os)),
        ("OSType", json!(std::env::consts::OS)),
        ("Architecture", json!(std::env::consts::ARCH)),
        (
            "NCPU",
            json!(std::thread::available_parallelism().map_or(1, |n| n.get())),
        ),
        ("MemTotal", json!(mem_total)),
        ("Name", json!(hostname)),
        ("CgroupVersion", json!(cgroup_version())),
        ("Debug", json!(false)),
        ("Experimental", json!(false)),
    ])
}

fn cgroup_version() -> &'static str {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    }
}

pub fn info_text(v: &Value) -> String {
    let get = |k: &str| super::template::go_string(&v[k]);
    let mem = v["MemTotal"].as_u64().map_or_else(String::new, human::size);
    format!(
        "Client: kiln\n Version:    {version}\n Context:    default\n Debug Mode: false\n\n\
         Server:\n Containers: {containers}\n  Running: {running}\n  Paused: 0\n  Stopped: {stopped}\n \
         Images: {images}\n Server Version: {version}\n Storage Driver: {driver}\n \
         Kernel Version: {kernel}\n Operating System: {os}\n OSType: {ostype}\n \
         Architecture: {arch}\n CPUs: {cpus}\n Total Memory: {mem}\n Name: {name}\n \
         Docker Root Dir: {root}\n Debug Mode: false\n Experimental: false\n",
        version = get("ServerVersion"),
        containers = get("Containers"),
        running = get("ContainersRunning"),
        stopped = get("ContainersStopped"),
        images = get("Images"),
        driver = get("Driver"),
        kernel = get("KernelVersion"),
        os = get("OperatingSystem"),
        ostype = get("OSType"),
        arch = get("Architecture"),
        cpus = get("NCPU"),
        name = get("Name"),
        root = get("DockerRootDir"),
    )
}

/// Renders `format` (a template, or `json`) over one value, with docker's trailing newline;
/// `name` is the template's name in error messages (docker names some: `version`).
pub fn render_one(name: &str, format: &str, value: &Value) -> CliResult<String> {
    if format == "json" {
        return Ok(format!("{value}\n"));
    }
    let template = Template::parse_named(name, format).map_err(template_error)?;
    Ok(format!(
        "{}\n",
        template.render(value).map_err(template_error)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_match_as_go_path_match() {
        for (pattern, text, want) in [
            ("app*", "app", true),
            ("app:*", "app:1", true),
            ("*/app", "registry/app", true),
            ("*", "registry/app", false),
            ("a?p", "app", true),
        ] {
            assert_eq!(glob(pattern, text), want, "{pattern:?} against {text:?}");
        }
    }

    #[test]
    fn table_formats_take_titles_from_the_template() {
        let items = vec![json!({"Repository": "app", "Tag": "1"})];
        let titles = json!({"Repository": "REPOSITORY", "Tag": "TAG"});
        assert_eq!(
            render_items("table {{.Repository}}\\t{{.Tag}}", &items, &titles).unwrap(),
            "REPOSITORY   TAG\napp          1\n"
        );
        assert_eq!(
            render_items("{{.Repository}}:{{.Tag}}", &items, &titles).unwrap(),
            "app:1\n"
        );
    }
}
