//! Typed instructions from raw nodes: every instruction, every flag, every refusal.
//!
//! Nodes are built by hand, exactly as the parser hands them over, so these tests pin the
//! instruction layer alone.

use kiln_grammar::ErrorKind;
use kiln_grammar::ast::{Heredoc, Node, Span};
use kiln_grammar::instructions::{
    ArgDecl, Command, Healthcheck, Instruction, InstructionKind, KeyValue, MountType, NetworkMode,
    SecurityMode, parse_instruction,
};
use std::time::Duration;

const SPAN: Span = Span {
    start_line: 7,
    start_col: 1,
    end_line: 7,
    end_col: 20,
};

fn node(keyword: &str, flags: &[&str], args: &[&str]) -> Node {
    Node {
        keyword: keyword.to_string(),
        flags: flags.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        json: false,
        heredocs: Vec::new(),
        onbuild: None,
        original: format!("{} {}", keyword.to_uppercase(), args.join(" ")),
        span: SPAN,
    }
}

fn json(mut n: Node) -> Node {
    n.json = true;
    n
}

fn heredoc(name: &str, content: &str) -> Heredoc {
    Heredoc {
        name: name.to_string(),
        content: content.to_string(),
        expand: true,
        chomp: false,
        file_descriptor: None,
    }
}

fn ok(n: &Node) -> InstructionKind {
    match parse_instruction(n) {
        Ok(i) => {
            assert_eq!(i.span, SPAN);
            assert_eq!(i.original, n.original);
            i.kind
        }
        Err(e) => panic!("{:?} failed: {} (hint: {:?})", n, e.message, e.hint),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn from() {
    let InstructionKind::From(f) = ok(&node("from", &[], &["alpine:3.20"])) else {
        panic!()
    };
    assert_eq!(
        (f.image.as_str(), f.name, f.platform),
        ("alpine:3.20", None, None)
    );
    let InstructionKind::From(f) = ok(&node(
        "from",
        &["--platform=$BUILDPLATFORM"],
        &["golang", "AS", "Build-1"],
    )) else {
        panic!()
    };
    assert_eq!(f.name.as_deref(), Some("build-1"));
    assert_eq!(f.platform.as_deref(), Some("$BUILDPLATFORM"));
}

#[test]
fn run_forms_and_flags() {
    let InstructionKind::Run(r) = ok(&node("run", &[], &["make  all"])) else {
        panic!()
    };
    assert_eq!(r.command, Command::Shell("make  all".into()));
    assert_eq!(r.network, NetworkMode::Default);
    assert_eq!(r.security, SecurityMode::Sandbox);
    assert!(r.mounts.is_empty());

    let InstructionKind::Run(r) = ok(&json(node(
        "run",
        &["--network=none", "--security=insecure"],
        &["make", "all"],
    ))) else {
        panic!()
    };
    assert_eq!(r.command, Command::Exec(strings(&["make", "all"])));
    assert_eq!(r.network, NetworkMode::None);
    assert_eq!(r.security, SecurityMode::Insecure);

    let InstructionKind::Run(r) = ok(&node("run", &["--network=host"], &["x"])) else {
        panic!()
    };
    assert_eq!(r.network, NetworkMode::Host);

    let mut n = node("run", &[], &["<<EOF"]);
    n.heredocs.push(heredoc("EOF", "echo hi\n"));
    let InstructionKind::Run(r) = ok(&n) else {
        panic!()
    };
    assert_eq!(r.heredocs.len(), 1);
    assert_eq!(r.heredocs[0].content, "echo hi\n");
}

#[test]
fn run_mounts() {
    let InstructionKind::Run(r) = ok(&node(
        "run",
        &[
            "--mount=type=cache,target=/root/.cache,id=go,sharing=locked,mode=0755,uid=1000",
            "--mount=from=build,src=/out,dst=/in,rw",
            "--mount=type=secret,id=token,required",
            "--mount=type=tmpfs,target=/tmp,size=64m",
            "--mount=type=ssh",
            "--mount=type=bind,target=$HOME/x",
        ],
        &["make"],
    )) else {
        panic!()
    };
    let m = &r.mounts;
    assert_eq!(m.len(), 6);
    assert_eq!(m[0].kind, MountType::Cache);
    assert_eq!(m[0].target.as_deref(), Some("/root/.cache"));
    assert_eq!(m[0].id.as_deref(), Some("go"));
    let keys: Vec<&str> = m[0].options.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["sharing", "mode", "uid"]);
    assert!(!m[0].readonly());

    assert_eq!(m[1].kind, MountType::Bind);
    assert_eq!(m[1].from.as_deref(), Some("build"));
    assert_eq!(m[1].source.as_deref(), Some("/out"));
    assert_eq!(m[1].target.as_deref(), Some("/in"));
    assert!(!m[1].readonly(), "rw given");

    assert_eq!(m[2].kind, MountType::Secret);
    assert!(m[2].required());
    assert!(m[2].readonly());

    assert_eq!(m[3].kind, MountType::Tmpfs);
    assert_eq!(m[3].option("size").unwrap().value.as_deref(), Some("64m"));
    assert_eq!(m[4].kind, MountType::Ssh);
    // Values naming variables stay raw for the builder to expand.
    assert_eq!(m[5].target.as_deref(), Some("$HOME/x"));
    assert_eq!(m[5].spec, "type=bind,target=$HOME/x");
    assert!(m[5].readonly(), "bind mounts are read-only by default");
}

#[test]
fn mount_refusals() {
    let cases: &[(&str, &str)] = &[
        ("type=volume", "unsupported mount type \"volume\""),
        ("type=cache,bogus=1", "unexpected key 'bogus' in 'bogus=1'"),
        (
            "type=cache,target",
            "invalid field 'target' must be a key=value pair",
        ),
        (
            "type=bind,mode=0700",
            "mode not allowed for \"bind\" type mounts",
        ),
        (
            "type=tmpfs,uid=1",
            "uid not allowed for \"tmpfs\" type mounts",
        ),
        (
            "type=bind,gid=1",
            "gid not allowed for \"bind\" type mounts",
        ),
        ("type=cache,mode=999", "invalid value 999 for mode"),
        ("type=cache,uid=x", "invalid value x for uid"),
        ("type=cache,ro=maybe", "invalid value for ro: maybe"),
        (
            "type=cache,sharing=all",
            "unsupported sharing value \"all\"",
        ),
        (
            "type=bind,sharing=shared",
            "invalid cache sharing set for bind mount",
        ),
        (
            "type=bind,required",
            "unexpected key 'required' for mount type 'bind'",
        ),
        (
            "type=cache,size=1g",
            "unexpected key 'size' for mount type 'cache'",
        ),
        ("type=tmpfs,size=lots", "invalid value for size: lots"),
        (
            "type=secret",
            "invalid secret mount. one of source, target required",
        ),
        (
            "type=secret,id=a,from=x",
            "secret mount should not have a from",
        ),
        (
            "type=secret,id=a,source=b",
            "both source and id can't be set",
        ),
        (
            "from=$STAGE",
            "'from' doesn't support variable expansion, define alias stage instead",
        ),
        (
            "type=bind,tar\"get=/x",
            "failed to parse csv mounts: bare \" in non-quoted-field",
        ),
        (
            "type=bind,\"target=/x",
            "failed to parse csv mounts: extraneous or missing \" in quoted-field",
        ),
    ];
    for (spec, message) in cases {
        let flag = format!("--mount={spec}");
        let err = parse_instruction(&node("run", &[&flag], &["x"])).unwrap_err();
        assert_eq!(err.message, *message, "{spec}");
        assert_eq!(err.kind, ErrorKind::Instruction);
        assert_eq!(err.span, Some(SPAN));
    }
    let err = parse_instruction(&node("run", &["--mount=type=cahce"], &["x"])).unwrap_err();
    assert_eq!(err.hint.as_deref(), Some("did you mean \"cache\"?"));
    let err = parse_instruction(&node("run", &["--mount=targte=/x"], &["x"])).unwrap_err();
    assert_eq!(err.hint.as_deref(), Some("did you mean 'target'?"));
}

#[test]
fn cmd_and_entrypoint() {
    assert_eq!(
        ok(&json(node("cmd", &[], &["nginx", "-g", "daemon off;"]))),
        InstructionKind::Cmd {
            command: Command::Exec(strings(&["nginx", "-g", "daemon off;"]))
        }
    );
    assert_eq!(
        ok(&node("entrypoint", &[], &["exec app"])),
        InstructionKind::Entrypoint {
            command: Command::Shell("exec app".into())
        }
    );
    assert_eq!(
        ok(&json(node("entrypoint", &[], &[]))),
        InstructionKind::Entrypoint {
            command: Command::Exec(vec![])
        }
    );
}

#[test]
fn env_and_label() {
    assert_eq!(
        ok(&node("env", &[], &["A", "1", "=", "B", "two words", ""])),
        InstructionKind::Env {
            vars: vec![
                KeyValue {
                    key: "A".into(),
                    value: "1".into(),
                    legacy: false
                },
                KeyValue {
                    key: "B".into(),
                    value: "two words".into(),
                    legacy: true
                },
            ]
        }
    );
    assert_eq!(
        ok(&node("label", &[], &["org.x", "\"y z\"", "="])),
        InstructionKind::Label {
            labels: vec![KeyValue {
                key: "org.x".into(),
                value: "\"y z\"".into(),
                legacy: false
            }]
        }
    );
}

#[test]
fn single_argument_instructions() {
    assert_eq!(
        ok(&node("maintainer", &[], &["Jane <j@x>"])),
        InstructionKind::Maintainer {
            name: "Jane <j@x>".into()
        }
    );
    assert_eq!(
        ok(&node("user", &[], &["app:app"])),
        InstructionKind::User {
            user: "app:app".into()
        }
    );
    assert_eq!(
        ok(&node("workdir", &[], &["/src"])),
        InstructionKind::Workdir {
            path: "/src".into()
        }
    );
    assert_eq!(
        ok(&node("stopsignal", &[], &["SIGTERM"])),
        InstructionKind::StopSignal {
            signal: "SIGTERM".into()
        }
    );
}

#[test]
fn lists() {
    assert_eq!(
        ok(&node("expose", &[], &["8080", "53/udp", "443"])),
        InstructionKind::Expose {
            ports: strings(&["443", "53/udp", "8080"])
        }
    );
    assert_eq!(
        ok(&json(node("volume", &[], &["/data", " /logs "]))),
        InstructionKind::Volume {
            paths: strings(&["/data", "/logs"])
        }
    );
    assert_eq!(
        ok(&json(node("shell", &[], &["/bin/bash", "-c"]))),
        InstructionKind::Shell {
            shell: strings(&["/bin/bash", "-c"])
        }
    );
    assert_eq!(
        ok(&node("arg", &[], &["A", "B=1", "C=", "D=x=y"])),
        InstructionKind::Arg {
            args: vec![
                ArgDecl {
                    name: "A".into(),
                    default: None
                },
                ArgDecl {
                    name: "B".into(),
                    default: Some("1".into())
                },
                ArgDecl {
                    name: "C".into(),
                    default: Some("".into())
                },
                ArgDecl {
                    name: "D".into(),
                    default: Some("x=y".into())
                },
            ]
        }
    );
}

#[test]
fn onbuild() {
    let mut n = node("onbuild", &[], &[]);
    n.original = "onbuild  RUN make".into();
    n.onbuild = Some(Box::new(node("run", &[], &["make"])));
    let InstructionKind::Onbuild {
        expression,
        trigger,
    } = ok(&n)
    else {
        panic!()
    };
    assert_eq!(expression, "RUN make");
    assert_eq!(trigger.keyword(), "RUN");

    let mut n = node("onbuild", &[], &[]);
    n.original = "ONBUILD COPY <<EOF /x".into();
    n.heredocs.push(heredoc("EOF", "hello\n"));
    let mut nested = node("copy", &[], &["<<EOF", "/x"]);
    nested.heredocs.push(heredoc("EOF", "hello\n"));
    n.onbuild = Some(Box::new(nested));
    let InstructionKind::Onbuild { expression, .. } = ok(&n) else {
        panic!()
    };
    assert_eq!(expression, "COPY <<EOF /x\nhello\nEOF");

    for (keyword, message) in [
        (
            "onbuild",
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
        ),
        ("from", "FROM isn't allowed as an ONBUILD trigger"),
        (
            "maintainer",
            "MAINTAINER isn't allowed as an ONBUILD trigger",
        ),
    ] {
        let mut n = node("onbuild", &[], &[]);
        n.onbuild = Some(Box::new(node(keyword, &[], &["x"])));
        assert_eq!(parse_instruction(&n).unwrap_err().message, message);
    }
    let err = parse_instruction(&node("onbuild", &[], &[])).unwrap_err();
    assert_eq!(err.message, "ONBUILD requires at least one argument");
}

#[test]
fn healthcheck() {
    assert_eq!(
        ok(&node("healthcheck", &[], &["none"])),
        InstructionKind::Healthcheck {
            check: Healthcheck::None
        }
    );
    let InstructionKind::Healthcheck {
        check: Healthcheck::Cmd(h),
    } = ok(&node(
        "healthcheck",
        &[
            "--interval=30s",
            "--timeout=1m30s",
            "--start-period=500ms",
            "--start-interval=2s",
            "--retries=3",
        ],
        &["CMD", "curl -f http://localhost/"],
    ))
    else {
        panic!()
    };
    assert_eq!(
        h.command,
        Command::Shell("curl -f http://localhost/".into())
    );
    assert_eq!(h.interval, Some(Duration::from_secs(30)));
    assert_eq!(h.timeout, Some(Duration::from_secs(90)));
    assert_eq!(h.start_period, Some(Duration::from_millis(500)));
    assert_eq!(h.start_interval, Some(Duration::from_secs(2)));
    assert_eq!(h.retries, Some(3));

    let InstructionKind::Healthcheck {
        check: Healthcheck::Cmd(h),
    } = ok(&json(node(
        "healthcheck",
        &["--interval=0s"],
        &["cmd", "true"],
    )))
    else {
        panic!()
    };
    assert_eq!(h.command, Command::Exec(strings(&["true"])));
    assert_eq!(h.interval, None, "zero means inherit");
    assert_eq!(h.retries, None);
}

#[test]
fn copy_and_add() {
    let mut n = node(
        "copy",
        &[
            "--from=build",
            "--chown=app:app",
            "--chmod=0644",
            "--link",
            "--parents",
            "--exclude=*.md",
            "--exclude=tmp/",
        ],
        &["a", "<<EOF", "b/", "/dst/"],
    );
    n.heredocs.push(heredoc("EOF", "inline\n"));
    let InstructionKind::Copy(c) = ok(&n) else {
        panic!()
    };
    assert_eq!(c.from.as_deref(), Some("build"));
    assert!(c.parents);
    let t = &c.transfer;
    assert_eq!(t.sources, strings(&["a", "b/"]));
    assert_eq!(t.heredocs.len(), 1);
    assert_eq!(t.heredocs[0].name, "EOF");
    assert_eq!(t.dest, "/dst/");
    assert_eq!(t.chown.as_deref(), Some("app:app"));
    assert_eq!(t.chmod.as_deref(), Some("0644"));
    assert!(t.link);
    assert_eq!(t.excludes, strings(&["*.md", "tmp/"]));

    let InstructionKind::Copy(c) = ok(&node("copy", &["--link=false"], &["a", "b"])) else {
        panic!()
    };
    assert!(!c.transfer.link && !c.parents && c.from.is_none());

    // JSON-form sources are paths, even when they look like heredocs.
    let InstructionKind::Copy(c) = ok(&json(node("copy", &[], &["<<EOF", "/x"]))) else {
        panic!()
    };
    assert_eq!(c.transfer.sources, strings(&["<<EOF"]));

    let InstructionKind::Add(a) = ok(&node(
        "add",
        &[
            "--checksum=sha256:abc",
            "--keep-git-dir",
            "--unpack=false",
            "--chown=1:1",
        ],
        &["https://example.com/x.tar.gz", "/x"],
    )) else {
        panic!()
    };
    assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
    assert!(a.keep_git_dir);
    assert_eq!(a.unpack, Some(false));
    assert_eq!(a.transfer.chown.as_deref(), Some("1:1"));
    let InstructionKind::Add(a) = ok(&node("add", &[], &["a.tar", "/"])) else {
        panic!()
    };
    assert_eq!(a.unpack, None);
}

/// Every refusal, with BuildKit's message where BuildKit has one.
#[test]
fn refusals() {
    let cases: Vec<(Node, &str)> = vec![
        (
            node("from", &[], &[]),
            "FROM requires either one or three arguments",
        ),
        (
            node("from", &[], &["a", "b"]),
            "FROM requires either one or three arguments",
        ),
        (
            node("from", &[], &["a", "to", "b"]),
            "FROM requires either one or three arguments",
        ),
        (
            node("from", &[], &["a", "as", "1st"]),
            "invalid name for build stage: \"1st\", name can't start with a number or contain symbols",
        ),
        (
            node("from", &[], &["a", "as", "x:y"]),
            "invalid name for build stage: \"x:y\", name can't start with a number or contain symbols",
        ),
        (
            node("from", &["--platform"], &["a"]),
            "missing a value on flag: --platform",
        ),
        (node("run", &[], &[]), "RUN requires at least one argument"),
        (
            json(node("run", &[], &[])),
            "RUN requires at least one argument",
        ),
        (
            node("run", &["--network=bridge"], &["x"]),
            "invalid network mode \"bridge\"",
        ),
        (
            node("run", &["--security=x"], &["x"]),
            "security \"x\" is not valid",
        ),
        (
            node("run", &["--mount"], &["x"]),
            "missing a value on flag: --mount",
        ),
        (node("cmd", &["--x=1"], &["a"]), "unknown flag: --x"),
        (node("env", &[], &[]), "ENV requires at least one argument"),
        (
            node("env", &[], &["", "v", "="]),
            "ENV names can not be blank",
        ),
        (
            node("env", &[], &["a", "b"]),
            "Bad input to ENV, too many arguments",
        ),
        (
            node("label", &[], &[]),
            "LABEL requires at least one argument",
        ),
        (
            node("maintainer", &[], &[]),
            "MAINTAINER requires exactly one argument",
        ),
        (
            node("expose", &[], &[]),
            "EXPOSE requires at least one argument",
        ),
        (
            node("volume", &[], &[]),
            "VOLUME requires at least one argument",
        ),
        (
            json(node("volume", &[], &[" "])),
            "VOLUME specified can not be an empty string",
        ),
        (
            node("user", &[], &["a", "b"]),
            "USER requires exactly one argument",
        ),
        (
            node("workdir", &[], &[]),
            "WORKDIR requires exactly one argument",
        ),
        (
            node("stopsignal", &[], &[]),
            "STOPSIGNAL requires exactly one argument",
        ),
        (node("arg", &[], &[]), "ARG requires at least one argument"),
        (node("arg", &[], &["=1"]), "ARG names can not be blank"),
        (
            node("shell", &[], &["/bin/sh -c"]),
            "SHELL requires the arguments to be in JSON form",
        ),
        (
            json(node("shell", &[], &[])),
            "SHELL requires at least one argument",
        ),
        (
            node("healthcheck", &[], &[]),
            "HEALTHCHECK requires at least one argument",
        ),
        (
            node("healthcheck", &[], &["NONE", "x"]),
            "HEALTHCHECK NONE takes no arguments",
        ),
        (
            node("healthcheck", &["--retries=1"], &["NONE"]),
            "unknown flag: --retries",
        ),
        (
            node("healthcheck", &[], &["RUN", "x"]),
            "Unknown type \"RUN\" in HEALTHCHECK (try CMD)",
        ),
        (
            node("healthcheck", &[], &["CMD"]),
            "Missing command after HEALTHCHECK CMD",
        ),
        (
            node("healthcheck", &["--interval=10"], &["CMD", "x"]),
            "time: missing unit in duration \"10\"",
        ),
        (
            node("healthcheck", &["--timeout=100us"], &["CMD", "x"]),
            "Interval \"timeout\" cannot be less than 1ms",
        ),
        (
            node("healthcheck", &["--retries=-1"], &["CMD", "x"]),
            "--retries cannot be negative (-1)",
        ),
        (
            node("healthcheck", &["--retries=many"], &["CMD", "x"]),
            "invalid value for --retries: \"many\"",
        ),
        (
            node("healthcheck", &["--period=1s"], &["CMD", "x"]),
            "unknown flag: --period",
        ),
        (
            node("copy", &[], &["only"]),
            "COPY requires at least two arguments, but only one was provided. Destination could not be determined",
        ),
        (
            node("add", &[], &["only"]),
            "ADD requires at least two arguments, but only one was provided. Destination could not be determined",
        ),
        (
            node("copy", &[], &["a", "<<EOF"]),
            "COPY cannot accept a heredoc as a destination",
        ),
        (
            node("copy", &[], &["<<EOF", "/x"]),
            "no heredoc body for <<EOF",
        ),
        (
            node("copy", &["--link=maybe"], &["a", "b"]),
            "expecting boolean value for flag --link, not: maybe",
        ),
        (
            node("copy", &["--from=a", "--from=b"], &["a", "b"]),
            "duplicate flag specified: --from",
        ),
        (
            node("copy", &["--checksum=x"], &["a", "b"]),
            "unknown flag: --checksum",
        ),
        (
            node("add", &["--from=x"], &["a", "b"]),
            "unknown flag: --from",
        ),
        (
            node("add", &["--parents"], &["a", "b"]),
            "unknown flag: --parents",
        ),
        (
            node("copy", &["--from=${IMG}"], &["a", "b"]),
            "COPY --from doesn't support variable expansion, define alias stage instead",
        ),
        (node("frm", &[], &["a"]), "unknown instruction: FRM"),
    ];
    for (n, message) in cases {
        let err = parse_instruction(&n).unwrap_err();
        assert_eq!(err.message, message, "{n:?}");
        assert_eq!(err.kind, ErrorKind::Instruction, "{n:?}");
        assert_eq!(err.span, Some(SPAN), "{n:?}");
    }
}

#[test]
fn unknown_flags_list_the_valid_ones() {
    let err = parse_instruction(&node("copy", &["--chmown=1"], &["a", "b"])).unwrap_err();
    assert_eq!(err.message, "unknown flag: --chmown");
    assert_eq!(
        err.hint.as_deref(),
        Some(
            "did you mean --chown? COPY takes --from, --chown, --chmod, --link, --parents, --exclude"
        )
    );
    let err = parse_instruction(&node("user", &["--x=1"], &["app"])).unwrap_err();
    assert_eq!(err.hint.as_deref(), Some("USER takes no flags"));
}

#[test]
fn serializes_to_tagged_json() {
    let i: Instruction =
        parse_instruction(&node("copy", &["--from=0", "--link"], &["/out", "/app"])).unwrap();
    let v = serde_json::to_value(&i).unwrap();
    assert_eq!(v["instruction"], "copy");
    assert_eq!(v["from"], "0");
    assert_eq!(v["link"], true);
    assert_eq!(v["sources"], serde_json::json!(["/out"]));
    assert_eq!(v["span"]["start_line"], 7);

    let h = parse_instruction(&node("healthcheck", &["--interval=2s"], &["CMD", "x"])).unwrap();
    let v = serde_json::to_value(&h).unwrap();
    assert_eq!(v["instruction"], "healthcheck");
    assert_eq!(v["check"]["cmd"]["interval"], 2_000_000_000u64);
    assert_eq!(v["check"]["cmd"]["command"]["shell"], "x");

    let r = parse_instruction(&node("run", &["--mount=type=cache,target=/c"], &["x"])).unwrap();
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["mounts"][0]["type"], "cache");
    assert_eq!(v["network"], "default");
}

/// The instructions of real Dockerfile text: the parser's nodes and this layer agree.
#[test]
fn from_dockerfile_text() {
    let text = "FROM alpine\n\
                ENV A=1 B=\"x y\"\n\
                ENV C d e\n\
                HEALTHCHECK --interval=5s CMD [\"curl\", \"-f\", \"http://x/\"]\n\
                ONBUILD COPY <<EOF /x\n\
                hi\n\
                EOF\n\
                COPY <<EOF <<-\"E2\" /dst/\n\
                a\n\
                EOF\n\
                \tb\n\
                \tE2\n\
                RUN --mount=type=cache,target=/c <<EOF\n\
                make\n\
                EOF\n\
                COPY --chmown=1 a b\n";
    let df = kiln_grammar::parse(text).unwrap();
    let parsed: Vec<_> = df.nodes.iter().map(parse_instruction).collect();
    let kinds: Vec<InstructionKind> = parsed[..7]
        .iter()
        .map(|r| r.as_ref().unwrap().kind.clone())
        .collect();
    let InstructionKind::Env { vars } = &kinds[1] else {
        panic!()
    };
    assert_eq!(
        (vars[1].key.as_str(), vars[1].value.as_str(), vars[1].legacy),
        ("B", "\"x y\"", false)
    );
    let InstructionKind::Env { vars } = &kinds[2] else {
        panic!()
    };
    assert_eq!(
        (vars[0].key.as_str(), vars[0].value.as_str(), vars[0].legacy),
        ("C", "d e", true)
    );
    let InstructionKind::Healthcheck {
        check: Healthcheck::Cmd(h),
    } = &kinds[3]
    else {
        panic!()
    };
    assert_eq!(
        h.command,
        Command::Exec(strings(&["curl", "-f", "http://x/"]))
    );
    assert_eq!(h.interval, Some(Duration::from_secs(5)));
    let InstructionKind::Onbuild {
        expression,
        trigger,
    } = &kinds[4]
    else {
        panic!()
    };
    assert_eq!(expression, "COPY <<EOF /x\nhi\nEOF");
    assert_eq!(trigger.keyword(), "COPY");
    let InstructionKind::Copy(c) = &kinds[5] else {
        panic!()
    };
    let bodies: Vec<(&str, &str)> = c
        .transfer
        .heredocs
        .iter()
        .map(|h| (h.name.as_str(), h.content.as_str()))
        .collect();
    assert_eq!(bodies, [("EOF", "a\n"), ("E2", "b\n")]);
    assert!(c.transfer.sources.is_empty());
    let InstructionKind::Run(r) = &kinds[6] else {
        panic!()
    };
    assert_eq!(r.mounts[0].kind, MountType::Cache);
    assert_eq!(r.heredocs[0].content, "make\n");

    let err = parsed[7].as_ref().unwrap_err();
    assert_eq!(err.message, "unknown flag: --chmown");
    assert_eq!(err.span.map(|s| s.start_line), Some(16));
}
