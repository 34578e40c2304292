//! The build plan from Dockerfile text: stages, bases, args, dependencies, pruning, errors.

use kiln_grammar::instructions::ArgDecl;
use kiln_grammar::plan::{ArgValue, Base, BuildPlan, PlanOptions, Platform, plan};
use kiln_grammar::{Error, ErrorKind, parse};
use std::collections::BTreeMap;

fn amd64() -> Platform {
    Platform::new("linux", "amd64", None)
}

fn options(target: Option<&str>, build_args: &[(&str, &str)]) -> PlanOptions {
    PlanOptions {
        target: target.map(str::to_string),
        build_args: build_args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        platform: amd64(),
    }
}

fn plan_with(text: &str, opts: &PlanOptions) -> Result<BuildPlan, Error> {
    let df = parse(text).unwrap_or_else(|e| panic!("parse failed: {}", e.message));
    plan(&df, opts)
}

fn plan_of(text: &str) -> BuildPlan {
    plan_with(text, &options(None, &[]))
        .unwrap_or_else(|e| panic!("plan failed: {} (hint: {:?})", e.message, e.hint))
}

fn plan_err(text: &str, opts: &PlanOptions) -> Error {
    match plan_with(text, opts) {
        Ok(p) => panic!("expected an error, got stages {:?}", p.order),
        Err(e) => e,
    }
}

fn image(reference: &str) -> Base {
    Base::Image {
        reference: reference.to_string(),
    }
}

#[test]
fn multi_stage_with_copy_from_name() {
    let p = plan_of(
        "FROM golang:1.22 AS build\n\
         WORKDIR /src\n\
         RUN go build -o /out/app\n\
         FROM alpine:3.20\n\
         COPY --from=build /out/app /app\n",
    );
    assert_eq!(p.order, [0, 1]);
    assert_eq!(p.target, 1);
    assert_eq!(p.groups, [vec![0], vec![1]]);
    let build = p.stage(0).unwrap();
    assert_eq!(build.name.as_deref(), Some("build"));
    assert_eq!(build.base, image("golang:1.22"));
    assert_eq!(build.instructions.len(), 2);
    assert_eq!(build.span.start_line, 1);
    let last = p.target_stage().unwrap();
    assert_eq!(last.index, 1);
    assert_eq!(last.name, None);
    assert_eq!(last.deps, [0]);
    assert_eq!(last.base, image("alpine:3.20"));
    assert_eq!(last.platform, amd64());
    assert!(!last.platform_explicit);
    assert_eq!(p.images(), ["alpine:3.20", "golang:1.22"]);
}

#[test]
fn copy_from_index_and_stage_names_ignore_case() {
    let p = plan_of(
        "FROM busybox AS Tools\n\
         FROM scratch\n\
         COPY --from=0 /bin/sh /sh\n\
         COPY --from=TOOLS /bin/ls /ls\n",
    );
    assert_eq!(p.stage(0).unwrap().name.as_deref(), Some("tools"));
    let last = p.stage(1).unwrap();
    assert_eq!(last.base, Base::Scratch);
    assert_eq!(last.deps, [0]);
    assert!(last.image_deps.is_empty());
}

#[test]
fn from_an_earlier_stage_inherits_platform_and_args() {
    let p = plan_with(
        "FROM --platform=linux/arm64 alpine AS base\n\
         ARG V=1\n\
         FROM BASE AS child\n\
         ARG W\n\
         FROM 1\n",
        &options(None, &[]),
    )
    .unwrap();
    let child = p.stage(1).unwrap();
    assert_eq!(child.base, Base::Stage { index: 0 });
    assert_eq!(child.deps, [0]);
    assert_eq!(child.platform, Platform::new("linux", "arm64", None));
    assert!(!child.platform_explicit);
    let names: Vec<&str> = child.args.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["V", "W"]);
    assert_eq!(child.args[0].stage, 0);
    assert_eq!(child.args[0].line, 2);
    assert_eq!(child.args[1].value, ArgValue::Unset);
    // A FROM may name an earlier stage by index too.
    assert_eq!(p.stage(2).unwrap().base, Base::Stage { index: 1 });
    assert_eq!(p.order, [0, 1, 2]);
    assert_eq!(p.groups, [vec![0], vec![1], vec![2]]);
}

#[test]
fn from_x_as_x_is_the_image() {
    let p = plan_of("FROM golang AS golang\nRUN go version\n");
    assert_eq!(p.stages[0].base, image("golang"));
    assert!(p.stages[0].deps.is_empty());
}

#[test]
fn global_args_expand_in_from_and_build_args_override() {
    let text = "ARG REGISTRY=docker.io\n\
                ARG VERSION=3.20\n\
                ARG IMAGE=${REGISTRY}/library/alpine:${VERSION}\n\
                FROM ${IMAGE}\n";
    let p = plan_of(text);
    assert_eq!(p.stages[0].base, image("docker.io/library/alpine:3.20"));
    assert_eq!(p.stages[0].base_name, "${IMAGE}");
    assert_eq!(p.global_args.len(), 3);
    assert_eq!(p.global_args[1].name, "VERSION");
    assert_eq!(p.global_args[1].value.as_deref(), Some("3.20"));

    let p = plan_with(text, &options(None, &[("VERSION", "3.19")])).unwrap();
    assert_eq!(p.stages[0].base, image("docker.io/library/alpine:3.19"));
    assert_eq!(p.global_args[1].value.as_deref(), Some("3.19"));
    assert!(p.unused_build_args.is_empty());
}

#[test]
fn global_arg_defaults_apply_with_shell_operators() {
    let p = plan_of("ARG TAG\nFROM alpine:${TAG:-latest}\n");
    assert_eq!(p.stages[0].base, image("alpine:latest"));
    assert_eq!(p.global_args[0].value, None);
}

#[test]
fn stage_arg_scope() {
    let text = "ARG V=global\n\
                ARG EMPTY\n\
                FROM alpine\n\
                RUN echo $V\n\
                ARG V\n\
                ARG D=default X EMPTY\n\
                ARG D=again\n";
    let p = plan_of(text);
    let args = &p.stages[0].args;
    let seen: Vec<(&str, &ArgValue, usize)> = args
        .iter()
        .map(|a| (a.name.as_str(), &a.value, a.line))
        .collect();
    assert_eq!(
        seen,
        [
            ("V", &ArgValue::Global("global".into()), 5),
            ("X", &ArgValue::Unset, 6),
            ("EMPTY", &ArgValue::Global(String::new()), 6),
            ("D", &ArgValue::Default("again".into()), 7),
        ]
    );

    let p = plan_with(text, &options(None, &[("V", "cli"), ("D", "cli-d")])).unwrap();
    let args = &p.stages[0].args;
    assert_eq!(args[0].value, ArgValue::BuildArg("cli".into()));
    assert_eq!(args[3].value, ArgValue::BuildArg("cli-d".into()));
    // The global default was overridden too.
    assert_eq!(p.global_args[0].value.as_deref(), Some("cli"));
}

#[test]
fn args_do_not_leak_between_unrelated_stages() {
    let p =
        plan_of("FROM alpine AS a\nARG ONE=1\nFROM alpine AS b\nARG TWO=2\nCOPY --from=a / /\n");
    let b = p.stage(1).unwrap();
    let names: Vec<&str> = b.args.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["TWO"]);
}

#[test]
fn predefined_platform_args() {
    let native = Platform::native();
    let arm = Platform::new("linux", "arm64", Some("v8"));
    let opts = PlanOptions {
        target: None,
        build_args: BTreeMap::new(),
        platform: arm.clone(),
    };
    let p = plan_with(
        "FROM --platform=$BUILDPLATFORM golang AS build\n\
         ARG TARGETARCH\n\
         ARG TARGETPLATFORM BUILDOS TARGETVARIANT\n\
         FROM alpine:${TARGETARCH}-${TARGETVARIANT}\n\
         COPY --from=build /out /out\n",
        &opts,
    )
    .unwrap();
    assert_eq!(p.build_platform, native);
    assert_eq!(p.target_platform, arm);
    let build = p.stage(0).unwrap();
    assert_eq!(build.platform, native);
    assert!(build.platform_explicit);
    let values: Vec<&ArgValue> = build.args.iter().map(|a| &a.value).collect();
    assert_eq!(
        values,
        [
            &ArgValue::Global("arm64".into()),
            &ArgValue::Global("linux/arm64/v8".into()),
            &ArgValue::Global(native.os.clone()),
            &ArgValue::Global("v8".into()),
        ]
    );
    assert_eq!(p.stage(1).unwrap().base, image("alpine:arm64-v8"));
    assert_eq!(p.stage(1).unwrap().platform, arm);
    assert_eq!(p.order, [0, 1]);
}

#[test]
fn predefined_args_can_be_overridden_and_redeclared_globally() {
    let p = plan_with(
        "ARG TARGETOS\nFROM alpine:${TARGETOS}-${TARGETSTAGE}\n",
        &options(Some("0"), &[("TARGETOS", "plan9")]),
    );
    // A numeric --target is not a stage name.
    let err = p.unwrap_err();
    assert_eq!(err.message, "target stage \"0\" could not be found");

    let p = plan_with(
        "ARG TARGETOS\nFROM alpine:${TARGETOS}-${TARGETSTAGE} AS final\n",
        &options(Some("final"), &[("TARGETOS", "plan9")]),
    )
    .unwrap();
    assert_eq!(p.stages[0].base, image("alpine:plan9-final"));
}

#[test]
fn proxy_args_need_no_declaration() {
    let p = plan_with(
        "FROM alpine\nRUN wget x\n",
        &options(
            None,
            &[
                ("HTTP_PROXY", "http://proxy:3128"),
                ("no_proxy", "localhost"),
                ("UNUSED", "1"),
            ],
        ),
    )
    .unwrap();
    assert_eq!(p.proxy_args.len(), 2);
    assert_eq!(p.proxy_args["HTTP_PROXY"], "http://proxy:3128");
    assert!(
        p.stages[0].args.is_empty(),
        "proxy args are not recorded as stage args"
    );
    assert_eq!(p.unused_build_args, ["UNUSED"]);
}

#[test]
fn target_pruning_keeps_what_the_target_needs() {
    let text = "FROM alpine AS deps\n\
                RUN apk add gcc\n\
                FROM deps AS build\n\
                RUN make\n\
                FROM alpine AS docs\n\
                RUN make docs\n\
                FROM build AS test\n\
                RUN make test\n\
                FROM scratch AS release\n\
                COPY --from=build /app /app\n";
    let p = plan_with(text, &options(Some("Test"), &[])).unwrap();
    assert_eq!(p.target, 3);
    assert_eq!(p.order, [0, 1, 3]);
    assert!(p.stage(2).is_none());
    assert_eq!(p.target_stage().unwrap().name.as_deref(), Some("test"));

    let p = plan_with(text, &options(None, &[])).unwrap();
    assert_eq!(p.target, 4);
    assert_eq!(p.order, [0, 1, 4]);

    let p = plan_with(text, &options(Some("docs"), &[])).unwrap();
    assert_eq!(p.order, [2]);
    assert_eq!(p.groups, [vec![2]]);
}

#[test]
fn independent_stages_build_in_parallel() {
    let p = plan_of(
        "FROM alpine AS a\n\
         FROM alpine AS b\n\
         FROM alpine AS c\n\
         COPY --from=a / /a\n\
         FROM alpine\n\
         COPY --from=b / /b\n\
         RUN --mount=type=bind,from=c,target=/c true\n",
    );
    assert_eq!(p.order, [0, 1, 2, 3]);
    assert_eq!(p.groups, [vec![0, 1], vec![2], vec![3]]);
    assert_eq!(p.stage(3).unwrap().deps, [1, 2]);
}

#[test]
fn run_mount_from_stage_and_image() {
    let p = plan_of(
        "FROM alpine AS tools\n\
         FROM alpine\n\
         RUN --mount=from=tools,target=/t --mount=type=cache,from=golang:1.22,source=/go,target=/go true\n",
    );
    let last = p.stage(1).unwrap();
    assert_eq!(last.deps, [0]);
    assert_eq!(last.image_deps, ["golang:1.22"]);
    assert_eq!(p.images(), ["alpine", "golang:1.22"]);
}

#[test]
fn copy_from_an_image_is_an_image_dependency() {
    let p = plan_of("FROM alpine\nCOPY --from=nginx:1.27 /etc/nginx /etc/nginx\n");
    assert_eq!(p.stages[0].image_deps, ["nginx:1.27"]);
    assert!(p.stages[0].deps.is_empty());
    assert!(p.warnings.is_empty());
}

#[test]
fn copy_from_a_near_miss_of_a_stage_name_warns() {
    let p = plan_of("FROM alpine AS builder\nFROM alpine\nCOPY --from=buidler /x /x\n");
    assert_eq!(p.stage(1).unwrap().image_deps, ["buidler"]);
    assert_eq!(p.warnings.len(), 1);
    assert_eq!(p.warnings[0].span.start_line, 3);
    assert!(
        p.warnings[0]
            .message
            .contains("did you mean stage \"builder\"")
    );
}

#[test]
fn serializes_for_kiln_plan() {
    let p = plan_of("ARG V=1\nFROM alpine AS a\nARG V\nFROM a\nCOPY --from=a / /\n");
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["target"], 1);
    assert_eq!(v["order"], serde_json::json!([0, 1]));
    assert_eq!(v["groups"], serde_json::json!([[0], [1]]));
    assert_eq!(v["stages"][0]["base"]["kind"], "image");
    assert_eq!(v["stages"][0]["base"]["reference"], "alpine");
    assert_eq!(v["stages"][1]["base"]["kind"], "stage");
    assert_eq!(v["stages"][1]["base"]["index"], 0);
    assert_eq!(v["stages"][0]["args"][0]["value"]["source"], "global");
    assert_eq!(v["stages"][0]["args"][0]["value"]["value"], "1");
    assert_eq!(v["stages"][1]["instructions"][0]["instruction"], "copy");
    assert_eq!(v["stages"][1]["platform"]["architecture"], "amd64");
    assert_eq!(v["global_args"][0]["name"], "V");
}

// ---- errors: message, kind, line ----

fn assert_error(
    text: &str,
    opts: &PlanOptions,
    kind: ErrorKind,
    message: &str,
    line: usize,
) -> Error {
    let err = plan_err(text, opts);
    assert_eq!(err.message, message, "{text}");
    assert_eq!(err.kind, kind, "{text}");
    assert_eq!(err.span.map(|s| s.start_line), Some(line), "{text}");
    err
}

#[test]
fn unknown_target_lists_stages_and_suggests() {
    let text = "FROM alpine AS build\nFROM alpine AS release\n";
    let err = plan_err(text, &options(Some("relase"), &[]));
    assert_eq!(err.message, "target stage \"relase\" could not be found");
    assert_eq!(err.kind, ErrorKind::Plan);
    assert_eq!(
        err.hint.as_deref(),
        Some("did you mean \"release\"? the stages are: build, release")
    );
    let err = plan_err(text, &options(Some("production"), &[]));
    assert_eq!(err.hint.as_deref(), Some("the stages are: build, release"));
    let err = plan_err("FROM alpine\n", &options(Some("x"), &[]));
    assert!(err.hint.unwrap().contains("names no stages"));
}

#[test]
fn references_to_later_stages_are_refused() {
    let opts = options(None, &[]);
    let err = assert_error(
        "FROM alpine\nCOPY --from=later /x /x\nFROM alpine AS later\n",
        &opts,
        ErrorKind::Plan,
        "COPY --from=later refers to stage \"later\" (line 3), which comes later in the Dockerfile",
        2,
    );
    assert!(
        err.hint
            .unwrap()
            .contains("move stage \"later\" above this one")
    );
    assert_error(
        "FROM alpine\nRUN --mount=from=1,target=/x true\nFROM alpine\n",
        &opts,
        ErrorKind::Plan,
        "RUN --mount=from=1 refers to stage \"1\" (line 3), which comes later in the Dockerfile",
        2,
    );
    let err = assert_error(
        "FROM alpine AS a\nFROM b\nFROM alpine AS b\n",
        &opts,
        ErrorKind::Plan,
        "FROM b refers to stage \"b\" (line 3), which comes later in the Dockerfile",
        2,
    );
    assert!(err.hint.unwrap().contains("docker.io/library/b"));
}

#[test]
fn references_to_the_same_stage_are_cycles() {
    let opts = options(None, &[]);
    assert_error(
        "FROM alpine AS a\nRUN true\nCOPY --from=a /x /y\n",
        &opts,
        ErrorKind::Plan,
        "circular dependency detected on stage: a",
        3,
    );
    assert_error(
        "FROM alpine\nFROM alpine\nCOPY --from=1 /x /y\n",
        &opts,
        ErrorKind::Plan,
        "circular dependency detected on stage: 1",
        3,
    );
    assert_error(
        "FROM alpine\n\nFROM 1\n",
        &opts,
        ErrorKind::Plan,
        "circular dependency detected on stage: 1",
        3,
    );
}

#[test]
fn stage_indices_out_of_range() {
    let err = assert_error(
        "FROM alpine\nFROM alpine\nCOPY --from=5 /x /y\n",
        &options(None, &[]),
        ErrorKind::Plan,
        "invalid stage index 5",
        3,
    );
    assert_eq!(
        err.hint.as_deref(),
        Some("this Dockerfile has 2 stages, numbered 0 to 1")
    );
    assert_error(
        "FROM alpine\nCOPY --from=-1 /x /y\n",
        &options(None, &[]),
        ErrorKind::Plan,
        "invalid stage index -1",
        2,
    );
}

#[test]
fn structure_errors() {
    let opts = options(None, &[]);
    assert_error(
        "ARG A=1\n# only args\nARG B=2\n",
        &opts,
        ErrorKind::Plan,
        "dockerfile contains no stages to build",
        3,
    );
    let err = assert_error(
        "ARG A=1\nRUN echo hi\nFROM alpine\n",
        &opts,
        ErrorKind::Plan,
        "no build stage in current context",
        2,
    );
    assert!(
        err.hint
            .unwrap()
            .contains("only ARG may come before the first FROM")
    );
    let err = assert_error(
        "FROM alpine AS x\nFROM alpine AS y\n\nFROM busybox AS X\n",
        &opts,
        ErrorKind::Plan,
        "duplicate stage name \"x\"",
        4,
    );
    assert!(err.hint.unwrap().contains("already defined on line 1"));
    assert_error(
        "FROM alpine\nFROM alpine AS 2nd\n",
        &opts,
        ErrorKind::Instruction,
        "invalid name for build stage: \"2nd\", name can't start with a number or contain symbols",
        2,
    );
    assert_error(
        "FROM alpine\nCOPY --chmown=1 a b\n",
        &opts,
        ErrorKind::Instruction,
        "unknown flag: --chmown",
        2,
    );
}

#[test]
fn base_and_platform_expansion_errors() {
    let opts = options(None, &[]);
    assert_error(
        "ARG IMG\nFROM ${IMG}\n",
        &opts,
        ErrorKind::Plan,
        "base name (${IMG}) should not be blank",
        2,
    );
    assert_error(
        "FROM alpine\nFROM $UNDEFINED AS x\n",
        &opts,
        ErrorKind::Plan,
        "base name ($UNDEFINED) should not be blank",
        2,
    );
    assert_error(
        "FROM --platform=$NOPE alpine\n",
        &opts,
        ErrorKind::Plan,
        "empty platform value from expression $NOPE",
        1,
    );
    let err = plan_err("FROM --platform=linux/ alpine\n", &opts);
    assert!(
        err.message.starts_with("failed to parse platform linux/:"),
        "{}",
        err.message
    );
    assert_eq!(err.span.map(|s| s.start_line), Some(1));
    let err = plan_err("ARG A\n\nFROM ${A:?required}\n", &opts);
    assert_eq!(err.kind, ErrorKind::Expansion);
    assert_eq!(err.span.map(|s| s.start_line), Some(3));
}

#[test]
fn arg_value_resolves_each_declaration_for_the_builder() {
    let p = plan_with(
        "ARG G=g\nFROM alpine\nARG D=1\nARG D=2\n",
        &options(None, &[("B", "b")]),
    )
    .unwrap();
    let decl = |name: &str, default: Option<&str>| ArgDecl {
        name: name.to_string(),
        default: default.map(str::to_string),
    };
    // Each declaration resolves on its own, so the first `ARG D=1` is not shadowed by the second.
    assert_eq!(
        p.arg_value(&decl("D", Some("1"))),
        ArgValue::Default("1".into())
    );
    assert_eq!(p.arg_value(&decl("G", None)), ArgValue::Global("g".into()));
    assert_eq!(
        p.arg_value(&decl("B", Some("x"))),
        ArgValue::BuildArg("b".into())
    );
    assert_eq!(
        p.arg_value(&decl("TARGETOS", None)),
        ArgValue::Global("linux".into())
    );
    assert_eq!(p.arg_value(&decl("NOPE", None)), ArgValue::Unset);
}

#[test]
fn the_escape_directive_applies_to_from_expansion() {
    let p = plan_of("# escape=`\nARG V=1\nFROM alpine:`$V-${V}\n");
    assert_eq!(p.escape, '`');
    assert_eq!(p.stages[0].base, image("alpine:$V-1"));
    assert_eq!(p.stages[0].span.start_line, 3);
}
