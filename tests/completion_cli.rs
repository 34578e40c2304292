//! `kiln completion`, `kiln man` and `NO_COLOR`, through the built binary: what a packager installs
//! and what a person reading `--help` in a terminal sees.

use std::path::Path;
use std::process::{Command, Output};

mod support;
use support::{KILN, have_tool};

const ESC: u8 = 0x1b;

fn kiln(args: &[&str]) -> Command {
    let mut cmd = Command::new(KILN);
    cmd.args(args);
    // The caller's environment must not decide what these tests see.
    cmd.env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE");
    cmd
}

fn success(mut cmd: Command) -> Output {
    let out = cmd.output().expect("kiln runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn bash_completion_knows_subcommands_and_their_flags() {
    let out = success(kiln(&["completion", "bash"]));
    let script = String::from_utf8(out.stdout).expect("UTF-8 script");
    assert!(script.contains("_kiln()"), "a bash completion function");
    assert!(script.contains("complete -F _kiln"), "registered for kiln");
    assert!(script.contains("kiln,build)"), "the build subcommand");
    assert!(script.contains("--build-arg"), "build's --build-arg flag");
    assert!(
        script.contains("--no-cache-filter"),
        "build's --no-cache-filter flag"
    );
    assert!(!script.contains("sandbox"), "hidden commands stay hidden");
}

#[test]
fn every_shell_gets_a_script() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = success(kiln(&["completion", shell]));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("build"),
            "{shell}: names the build subcommand"
        );
    }
}

/// What bash offers for the words typed so far (the last one is being completed), calling the
/// completion function the way `complete -F` does: `_kiln COMMAND CURRENT PREVIOUS`.
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    let current = words.len() - 1;
    let program = format!(
        "source \"$1\"; COMP_WORDS=({words}); COMP_CWORD={current}; \
         _kiln kiln {cur} {prev}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words = words.join(" "),
        cur = words[current],
        prev = words[current.saturating_sub(1)],
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program, "bash"])
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_with_the_script() {
    if !have_tool("bash") {
        eprintln!("skipping: no bash");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("kiln.bash");
    std::fs::write(&script, success(kiln(&["completion", "bash"])).stdout).unwrap();
    // `-n` parses without running: a syntax error in the generated script fails here, not in a
    // user's shell start-up.
    let out = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(bash_completes(&script, &["kiln", "bu"]), ["build"]);
    assert_eq!(
        bash_completes(&script, &["kiln", "build", "--build-a"]),
        ["--build-arg"]
    );
    assert!(
        bash_completes(&script, &["kiln", "sand"]).is_empty(),
        "sandbox is hidden"
    );
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = kiln(&["completion", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}

/// A page `man` can lay out: the title macro comes before any section, NAME is the first section,
/// and the name line is `NAME \- about`.
fn assert_roff_page(path: &Path, name: &str, title: &str) {
    let page = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let macros: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with('.'))
        // clap_mangen opens with a groff/troff portable definition of the \*(Aq string.
        .skip_while(|l| l.starts_with(".ie ") || l.starts_with(".el "))
        .collect();
    let th = format!(".TH {title} 1 ");
    assert!(
        macros.first().is_some_and(|m| m.starts_with(&th)),
        "{}: the first request is `{th}…`: {:?}",
        path.display(),
        macros.first()
    );
    assert_eq!(
        macros.get(1).copied(),
        Some(".SH NAME"),
        "{}",
        path.display()
    );
    let escaped = name.replace('-', "\\-");
    assert!(
        page.contains(&format!("\n{escaped} \\- ")),
        "{}: a `{escaped} \\- about` line",
        path.display()
    );
}

#[test]
fn man_writes_a_page_for_kiln_and_each_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let out = success(kiln(&["man", "--dir", pages.to_str().unwrap()]));
    let listed = String::from_utf8(out.stdout).unwrap();

    assert_roff_page(&pages.join("kiln.1"), "kiln", "KILN");
    assert_roff_page(&pages.join("kiln-build.1"), "kiln-build", "KILN-BUILD");
    assert_roff_page(
        &pages.join("kiln-container-ls.1"),
        "kiln-container-ls",
        "KILN-CONTAINER-LS",
    );
    assert!(
        !pages.join("kiln-sandbox.1").exists(),
        "hidden commands get no page"
    );
    assert!(
        !pages.join("kiln-help.1").exists(),
        "clap's help command gets no page"
    );
    // The listing names exactly the files written.
    let mut written: Vec<String> = std::fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let mut listed: Vec<String> = listed.lines().map(str::to_owned).collect();
    written.sort();
    listed.sort();
    assert_eq!(written, listed);

    let build = std::fs::read_to_string(pages.join("kiln-build.1")).unwrap();
    for flag in [
        "\\-\\-build\\-arg",
        "\\-\\-no\\-cache",
        "\\-\\-iidfile",
        "KILN_ROOT",
    ] {
        assert!(build.contains(flag), "kiln-build.1 documents {flag}");
    }

    if have_tool("man") {
        // man-db lays the page out the way a reader sees it, through preconv and groff.
        let out = Command::new("man")
            .arg("-l")
            .arg(pages.join("kiln-build.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "man -l: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("kiln-build - Build an image from a Dockerfile"),
            "{text}"
        );
    } else {
        eprintln!("note: no man here; only the roff structure was checked");
    }
}

#[test]
fn man_without_dir_prints_the_main_page() {
    let out = success(kiln(&["man"]));
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains("\n.TH KILN 1 "), "{page}");
    assert!(page.contains("\n.SH SUBCOMMANDS\n"));
    assert!(
        page.contains("kiln\\-build(1)"),
        "refers to the subcommand pages"
    );
}

#[test]
fn source_date_epoch_fixes_the_page_date() {
    let mut cmd = kiln(&["man"]);
    cmd.env("SOURCE_DATE_EPOCH", "1700000000");
    let page = String::from_utf8(success(cmd).stdout).unwrap();
    assert!(
        page.contains("\n.TH KILN 1 2023-11-14 \"kiln "),
        "{}",
        page.lines().find(|l| l.starts_with(".TH")).unwrap_or("")
    );
}

#[test]
fn help_is_coloured_only_without_no_color() {
    // CLICOLOR_FORCE asks for colour although stdout is a pipe, so the test can see it.
    let mut forced = kiln(&["--help"]);
    forced.env("CLICOLOR_FORCE", "1");
    let coloured = success(forced).stdout;
    assert!(coloured.contains(&ESC), "help is coloured when forced");

    for args in [&["--help"][..], &["build", "--help"][..]] {
        let mut cmd = kiln(args);
        cmd.env("NO_COLOR", "1").env("CLICOLOR_FORCE", "1");
        let out = success(cmd);
        assert!(
            !out.stdout.contains(&ESC),
            "{args:?}: no ESC byte with NO_COLOR"
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: kiln"));
    }

    // An empty NO_COLOR means "not set" (https://no-color.org).
    let mut cmd = kiln(&["--help"]);
    cmd.env("NO_COLOR", "").env("CLICOLOR_FORCE", "1");
    assert!(success(cmd).stdout.contains(&ESC));
}

#[test]
fn plain_no_color_help_has_no_escape_bytes() {
    let mut cmd = kiln(&["--help"]);
    cmd.env("NO_COLOR", "1");
    let out = success(cmd);
    assert!(!out.stdout.contains(&ESC));
    assert!(!out.stderr.contains(&ESC));
}

#[test]
fn usage_errors_are_uncoloured_with_no_color() {
    let mut cmd = kiln(&["build", "--no-such-flag", "."]);
    cmd.env("NO_COLOR", "1").env("CLICOLOR_FORCE", "1");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    assert!(!out.stderr.contains(&ESC), "no ESC byte in the usage error");
}
