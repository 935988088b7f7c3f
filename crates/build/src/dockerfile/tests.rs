use super::*;

fn ok(text: &str) -> Dockerfile {
    match parse(text) {
        Ok(d) => d,
        Err(e) => panic!("unexpected error {e} for {text:?}"),
    }
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(d) => panic!("expected an error for {text:?}, got {d:?}"),
        Err(e) => e.to_string(),
    }
}

/// The instructions of the only stage of `FROM a\n<body>`.
fn body(body: &str) -> Vec<Instruction> {
    let mut d = ok(&format!("FROM a\n{body}"));
    assert_eq!(d.stages.len(), 1);
    d.stages.remove(0).instructions
}

fn kind(body_text: &str) -> InstructionKind {
    let mut ins = body(body_text);
    assert_eq!(ins.len(), 1, "{ins:?}");
    ins.remove(0).kind
}

fn body_err(body: &str) -> String {
    err(&format!("FROM a\n{body}"))
}

fn shell(s: &str) -> CommandLine {
    CommandLine::Shell(s.into())
}

fn exec(v: &[&str]) -> CommandLine {
    CommandLine::Exec(v.iter().map(|s| s.to_string()).collect())
}

fn run(body_text: &str) -> Run {
    match kind(body_text) {
        InstructionKind::Run(r) => r,
        k => panic!("not RUN: {k:?}"),
    }
}

fn copy(body_text: &str) -> Copy {
    match kind(body_text) {
        InstructionKind::Copy(c) => c,
        k => panic!("not COPY: {k:?}"),
    }
}

fn path(s: &str) -> CopySource {
    CopySource::Path(s.into())
}

// ---------------------------------------------------------------- examples

#[test]
fn flask_dockerfile() {
    let d = ok("FROM python:3.9-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
EXPOSE 5000
CMD [\"python\", \"app.py\"]
");
    assert_eq!(d.directives, Directives::default());
    assert!(d.global_args.is_empty());
    assert_eq!(d.stages.len(), 1);
    let s = &d.stages[0];
    assert_eq!(s.base, "python:3.9-slim");
    assert_eq!(
        (s.name.as_deref(), s.platform.as_deref(), s.line),
        (None, None, 1)
    );
    assert_eq!(s.original, "FROM python:3.9-slim");
    let kinds: Vec<_> = s.instructions.iter().map(|i| i.kind.clone()).collect();
    let plain_copy = |src: &str, dest: &str| {
        InstructionKind::Copy(Copy {
            sources: vec![path(src)],
            dest: dest.into(),
            from: None,
            chown: None,
            chmod: None,
            link: false,
            parents: false,
            excludes: vec![],
        })
    };
    assert_eq!(
        kinds,
        vec![
            InstructionKind::Workdir("/app".into()),
            plain_copy("requirements.txt", "."),
            InstructionKind::Run(Run {
                command: shell("pip install -r requirements.txt"),
                heredocs: vec![],
                mounts: vec![],
                network: NetworkMode::Default,
                security: SecurityMode::Sandbox,
                devices: vec![],
            }),
            plain_copy(".", "."),
            InstructionKind::Expose(vec!["5000".into()]),
            InstructionKind::Cmd(exec(&["python", "app.py"])),
        ]
    );
    let lines: Vec<_> = s.instructions.iter().map(|i| i.line).collect();
    assert_eq!(lines, [2, 3, 4, 5, 6, 7]);
    assert_eq!(
        s.instructions[2].original,
        "RUN pip install -r requirements.txt"
    );
    assert_eq!(s.instructions[5].original, "CMD [\"python\", \"app.py\"]");
}

#[test]
fn multi_stage_with_backtick_escape_heredocs_and_cache_mount() {
    let text = "# syntax=docker/dockerfile:1
# escape=`
ARG GO_VERSION=1.22 `
    DEBIAN=bookworm
ARG APP
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-${DEBIAN} AS Build
WORKDIR /src
RUN --mount=type=cache,target=/root/.cache/go-build `
    --mount=type=bind,source=.,target=/src `
    go build -o /out/app C:\\path `
    ./cmd/app
COPY <<config.json <<-'run.sh' /etc/app/
{\"name\": \"$APP\"}
config.json
\t#!/bin/sh
\texec /app \"$@\"
\trun.sh
RUN <<EOF
set -e
echo built > /out/stamp
EOF

FROM scratch
COPY --from=build /out/app /app
ENTRYPOINT [\"/app\"]
";
    let d = ok(text);
    assert_eq!(d.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(d.directives.escape, '`');
    assert_eq!(
        d.global_args,
        vec![
            GlobalArg {
                name: "GO_VERSION".into(),
                default: Some("1.22".into()),
                line: 3
            },
            GlobalArg {
                name: "DEBIAN".into(),
                default: Some("bookworm".into()),
                line: 3
            },
            GlobalArg {
                name: "APP".into(),
                default: None,
                line: 5
            },
        ]
    );
    assert_eq!(d.stages.len(), 2);
    let build = &d.stages[0];
    assert_eq!(
        build.name.as_deref(),
        Some("build"),
        "stage names are lower-cased"
    );
    assert_eq!(build.base, "golang:${GO_VERSION}-${DEBIAN}");
    assert_eq!(build.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(build.line, 6);

    let ins = &build.instructions;
    assert_eq!(ins.len(), 4);
    assert_eq!(ins[0].kind, InstructionKind::Workdir("/src".into()));
    let InstructionKind::Run(r) = &ins[1].kind else {
        panic!("{:?}", ins[1])
    };
    assert_eq!(ins[1].line, 8);
    assert_eq!(ins[1].end_line, 11);
    // With a backtick escape, backslashes are ordinary characters.
    assert_eq!(
        r.command,
        shell("go build -o /out/app C:\\path     ./cmd/app")
    );
    assert_eq!(r.mounts.len(), 2);
    assert_eq!(r.mounts[0].kind, MountType::Cache);
    assert_eq!(r.mounts[0].target.as_deref(), Some("/root/.cache/go-build"));
    assert!(!r.mounts[0].readonly);
    assert_eq!(r.mounts[1].kind, MountType::Bind);
    assert_eq!(r.mounts[1].source.as_deref(), Some("."));

    let InstructionKind::Copy(c) = &ins[2].kind else {
        panic!("{:?}", ins[2])
    };
    assert_eq!((ins[2].line, ins[2].end_line), (12, 17));
    assert_eq!(c.dest, "/etc/app/");
    let [CopySource::Heredoc(a), CopySource::Heredoc(b)] = c.sources.as_slice() else {
        panic!("{:?}", c.sources)
    };
    assert_eq!(a.name, "config.json");
    assert!(a.expand);
    assert_eq!(a.data(), "{\"name\": \"$APP\"}\n");
    assert_eq!(b.name, "run.sh");
    assert!(!b.expand && b.chomp);
    assert_eq!(b.data(), "#!/bin/sh\nexec /app \"$@\"\n");

    let InstructionKind::Run(r) = &ins[3].kind else {
        panic!("{:?}", ins[3])
    };
    assert_eq!(r.command, shell("<<EOF"));
    assert_eq!(r.heredocs.len(), 1);
    assert_eq!(r.heredocs[0].content, "set -e\necho built > /out/stamp\n");
    assert_eq!((ins[3].line, ins[3].end_line), (18, 21));

    let fin = &d.stages[1];
    assert!(fin.is_scratch());
    assert_eq!(fin.line, 23);
    let InstructionKind::Copy(c) = &fin.instructions[0].kind else {
        panic!()
    };
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.sources, vec![path("/out/app")]);
    assert_eq!(
        fin.instructions[1].kind,
        InstructionKind::Entrypoint(exec(&["/app"]))
    );
    assert_eq!(d.stage("BUILD").map(|s| s.line), Some(6));
    assert_eq!(d.stage("1").map(|s| s.line), Some(23));
}

// -------------------------------------------------------------- directives

#[test]
fn directives_are_read_at_the_top_only() {
    let d = ok("# Syntax = docker/dockerfile:1.7\n#ESCAPE=`\n# check=skip=all\nFROM a\n");
    assert_eq!(
        d.directives.syntax.as_deref(),
        Some("docker/dockerfile:1.7")
    );
    assert_eq!(d.directives.escape, '`');
    assert_eq!(d.directives.check.as_deref(), Some("skip=all"));

    // A blank line, another comment or an unknown key ends the block.
    for text in [
        "\n# escape=`\nFROM a\n",
        "# hello\n# escape=`\nFROM a\n",
        "# unknown=1\n# escape=`\nFROM a\n",
        "FROM a\n# escape=`\n",
    ] {
        assert_eq!(ok(text).directives.escape, '\\', "{text:?}");
    }
    // Leading whitespace and a byte-order mark are fine.
    assert_eq!(ok("\u{feff}  # escape=`\nFROM a\n").directives.escape, '`');
    assert_eq!(ok("# escape=\\\nFROM a\n").directives.escape, '\\');
}

#[test]
fn directive_errors() {
    assert_eq!(
        err("# escape=`\n# escape=\\\nFROM a\n"),
        "line 2: only one escape parser directive can be used"
    );
    assert_eq!(
        err("# escape=x\nFROM a\n"),
        "line 1: invalid escape token 'x' does not match ` or \\"
    );
}

#[test]
fn backtick_escape_changes_continuations() {
    let i = body("RUN echo a `\nRUN echo c \\\n  d");
    assert_eq!(i.len(), 2, "without the directive the backtick is plain");
    assert_eq!(i[0].kind, InstructionKind::Run(run_of(shell("echo a `"))));
    assert_eq!(i[1].kind, InstructionKind::Run(run_of(shell("echo c   d"))));
    let d = ok("# escape=`\nFROM a\nRUN echo a `\n  b\nRUN dir c:\\ \n");
    let ins = &d.stages[0].instructions;
    assert_eq!(ins.len(), 2);
    assert_eq!(
        ins[0].kind,
        InstructionKind::Run(run_of(shell("echo a   b")))
    );
    assert_eq!(ins[1].kind, InstructionKind::Run(run_of(shell("dir c:\\"))));
}

fn run_of(command: CommandLine) -> Run {
    Run {
        command,
        heredocs: vec![],
        mounts: vec![],
        network: NetworkMode::Default,
        security: SecurityMode::Sandbox,
        devices: vec![],
    }
}

// ----------------------------------------------------- lines and comments

#[test]
fn continuations_comments_and_blank_lines() {
    let text = "# comment\n\n   \nFROM a\n  # indented comment\nRUN apt-get update && \\\n    # a comment inside\n\n    apt-get install -y \\\n      curl\nENV A=1\n";
    let d = ok(text);
    let ins = &d.stages[0].instructions;
    assert_eq!(ins.len(), 2);
    assert_eq!(
        ins[0].kind,
        InstructionKind::Run(run_of(shell(
            "apt-get update &&     apt-get install -y       curl"
        )))
    );
    assert_eq!((ins[0].line, ins[0].end_line), (6, 10));
    assert_eq!(ins[1].line, 11);
    let ast = ast::parse_ast(text).unwrap();
    assert_eq!(ast.warnings.len(), 1, "empty continuation lines warn");
    // As in BuildKit, a blank line does not end a continuation: the next
    // instruction is swallowed.
    let ins = body("RUN a \\\n\nENV A=1");
    assert_eq!(ins.len(), 1);
    assert_eq!(
        ins[0].kind,
        InstructionKind::Run(run_of(shell("a ENV A=1")))
    );
}

#[test]
fn escaped_escape_is_not_a_continuation_and_trailing_blanks_are_ok() {
    let i = body("RUN echo \\\\\nRUN echo a \\  \t\n b");
    assert_eq!(i.len(), 2);
    assert_eq!(i[0].kind, InstructionKind::Run(run_of(shell("echo \\\\"))));
    assert_eq!(i[1].kind, InstructionKind::Run(run_of(shell("echo a  b"))));
}

#[test]
fn crlf_line_endings() {
    let d = ok("FROM a\r\nRUN echo \\\r\n  hi\r\nCMD x\r\n");
    let ins = &d.stages[0].instructions;
    assert_eq!(
        ins[0].kind,
        InstructionKind::Run(run_of(shell("echo   hi")))
    );
    assert_eq!(ins[1].kind, InstructionKind::Cmd(shell("x")));
}

#[test]
fn trailing_text_after_hash_is_not_a_comment() {
    assert_eq!(
        kind("RUN echo a # not a comment"),
        InstructionKind::Run(run_of(shell("echo a # not a comment")))
    );
}

// ---------------------------------------------------------------- errors

#[test]
fn error_messages_name_the_line_and_problem() {
    assert_eq!(
        err("FROM a\n\nRUNN x\n"),
        "line 3: unknown instruction: RUNN (did you mean RUN?)"
    );
    assert_eq!(
        err("FROM a\nfoo bar\n"),
        "line 2: unknown instruction: foo (did you mean from?)"
    );
    assert_eq!(
        err("FROM a\nzzzzzz bar\n"),
        "line 2: unknown instruction: zzzzzz"
    );
    assert_eq!(
        err("FROM a\nRUN x\nRUN y\nRUN z\nFROM a b\n"),
        "line 5: FROM requires either one or three arguments"
    );
    assert_eq!(
        err("FROM a\n\n\n\n\n\nRUN <<EOF\nhello\n"),
        "line 7: unterminated heredoc EOF"
    );
    assert_eq!(
        err("FROM a\nENV =x\n"),
        "line 2: ENV names can not be blank"
    );
    assert_eq!(
        err("FROM a\n\n\n\n\n\n\n\nCOPY onlyone\n"),
        "line 9: COPY requires at least two arguments, but only one was provided. Destination could not be determined"
    );
    assert_eq!(err(""), "line 1: file with no instructions");
    assert_eq!(
        err("# only a comment\n\n"),
        "line 2: file with no instructions"
    );
    assert_eq!(
        err("ARG A\n"),
        "line 1: dockerfile contains no stages to build"
    );
    assert_eq!(
        err("ARG A\nRUN x\nFROM a\n"),
        "line 2: no build stage in current context"
    );
    let e = parse("FROM a\nBOGUS\n").unwrap_err();
    assert_eq!(
        (e.line, e.message.as_str()),
        (2, "unknown instruction: BOGUS")
    );
}

// ------------------------------------------------------------------ FROM

#[test]
fn from_forms() {
    let d = ok("FROM scratch\nfrom --platform=linux/arm64 alpine:3.19 as Base\nFROM base AS final-stage_1.x\n");
    let s = &d.stages;
    assert!(s[0].is_scratch());
    assert_eq!(s[0].name, None);
    assert_eq!(s[1].base, "alpine:3.19");
    assert_eq!(s[1].platform.as_deref(), Some("linux/arm64"));
    assert_eq!(s[1].name.as_deref(), Some("base"));
    assert_eq!(s[2].name.as_deref(), Some("final-stage_1.x"));
    assert_eq!(
        err("FROM a AS 1x\n"),
        "line 1: invalid name for build stage: \"1x\", name can't start with a number or contain symbols"
    );
    assert_eq!(
        err("FROM a XS b\n"),
        "line 1: FROM requires either one or three arguments"
    );
    assert_eq!(
        err("FROM\n"),
        "line 1: FROM requires either one or three arguments"
    );
    assert_eq!(
        err("FROM --platfrom=x a\n"),
        "line 1: unknown flag: --platfrom (did you mean platform?)"
    );
    assert_eq!(
        err("FROM --platform a\n"),
        "line 1: missing a value on flag: --platform"
    );
}

// ------------------------------------------------------------------- RUN

#[test]
fn run_shell_and_exec_forms() {
    assert_eq!(
        run("RUN echo \"hi\" $HOME").command,
        shell("echo \"hi\" $HOME")
    );
    assert_eq!(
        run("RUN [\"echo\", \"$HOME\"]").command,
        exec(&["echo", "$HOME"])
    );
    assert_eq!(run("RUN   [ \"a\" ]  ").command, exec(&["a"]));
    // Not valid JSON: shell form.
    assert_eq!(run("RUN [echo, hi]").command, shell("[echo, hi]"));
    assert_eq!(
        run("RUN [\"a\", \"b\"] && c").command,
        shell("[\"a\", \"b\"] && c")
    );
    assert_eq!(run("RUN ['a']").command, shell("['a']"));
    assert_eq!(run("RUN []").command, exec(&[]));
    // A JSON array of non-strings is an error, as in BuildKit.
    assert_eq!(
        body_err("RUN [\"a\", 1]"),
        "line 2: when using JSON array syntax, arrays must be comprised of strings only"
    );
    assert_eq!(run("RUN").command, shell(""));
}

#[test]
fn run_flags() {
    let r = run("RUN --mount=type=cache,target=/var/cache/apt,sharing=locked,id=apt \\\n    --mount=type=secret,id=token,dst=/run/secrets/token,required=true,mode=0400,uid=1,gid=2 \\\n    --mount=type=tmpfs,target=/tmp,size=1g \\\n    --mount=type=bind,from=build,src=/out,target=/in,readonly \\\n    --mount=type=ssh \\\n    --network=none --security=insecure apt-get update");
    assert_eq!(r.command, shell("apt-get update"));
    assert_eq!(r.network, NetworkMode::None);
    assert_eq!(r.security, SecurityMode::Insecure);
    let m = &r.mounts;
    assert_eq!(m.len(), 5);
    assert_eq!(
        (m[0].kind, m[0].sharing, m[0].id.as_deref()),
        (MountType::Cache, Some(Sharing::Locked), Some("apt"))
    );
    assert_eq!(m[1].kind, MountType::Secret);
    assert_eq!(
        (
            m[1].target.as_deref(),
            m[1].required,
            m[1].mode,
            m[1].uid,
            m[1].gid
        ),
        (
            Some("/run/secrets/token"),
            true,
            Some(0o400),
            Some(1),
            Some(2)
        )
    );
    assert_eq!((m[2].kind, m[2].size), (MountType::Tmpfs, Some(1 << 30)));
    assert_eq!(
        (m[3].from.as_deref(), m[3].source.as_deref(), m[3].readonly),
        (Some("build"), Some("/out"), true)
    );
    assert_eq!(m[4].kind, MountType::Ssh);
    assert_eq!(
        m[0].raw,
        "type=cache,target=/var/cache/apt,sharing=locked,id=apt"
    );
    assert_eq!(run("RUN --network=host x").network, NetworkMode::Host);
    assert_eq!(run("RUN --network=default x").network, NetworkMode::Default);
}

#[test]
fn run_flag_errors() {
    assert_eq!(
        body_err("RUN --network=bridge x"),
        "line 2: invalid network mode \"bridge\""
    );
    assert_eq!(
        body_err("RUN --security=root x"),
        "line 2: security \"root\" is not valid"
    );
    assert_eq!(
        body_err("RUN --mount=type=nfs x"),
        "line 2: unsupported mount type \"nfs\""
    );
    assert_eq!(
        body_err("RUN --mnt=type=cache x"),
        "line 2: unknown flag: --mnt (did you mean mount?)"
    );
    assert_eq!(body_err("RUN --xyzzy=1 x"), "line 2: unknown flag: --xyzzy");
    assert_eq!(
        body_err("RUN --moutn=type=cache x"),
        "line 2: unknown flag: --moutn (did you mean mount?)"
    );
    assert_eq!(
        body_err("RUN --network=none --network=host x"),
        "line 2: duplicate flag specified: --network"
    );
    assert_eq!(
        body_err("RUN --mount x"),
        "line 2: missing a value on flag: --mount"
    );
    assert_eq!(
        body_err("RUN --mount=type=cache,target=/a,uid=x y"),
        "line 2: invalid value x for uid"
    );
}

#[test]
fn flags_take_quotes_and_stop_at_double_dash() {
    let r = run("RUN --mount=\"type=bind,target=/a b\" -- --not-a-flag");
    assert_eq!(r.mounts[0].target.as_deref(), Some("/a b"));
    assert_eq!(r.command, shell("--not-a-flag"));
}

// ----------------------------------------------------- CMD, ENTRYPOINT, SHELL

#[test]
fn cmd_entrypoint_shell() {
    assert_eq!(kind("CMD echo hi"), InstructionKind::Cmd(shell("echo hi")));
    assert_eq!(
        kind("cmd [\"a\",\"b c\"]"),
        InstructionKind::Cmd(exec(&["a", "b c"]))
    );
    assert_eq!(
        kind("ENTRYPOINT [\"/bin/app\", \"--flag\"]"),
        InstructionKind::Entrypoint(exec(&["/bin/app", "--flag"]))
    );
    assert_eq!(
        kind("ENTRYPOINT exec app"),
        InstructionKind::Entrypoint(shell("exec app"))
    );
    assert_eq!(
        kind("SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]"),
        InstructionKind::Shell(vec![
            "/bin/bash".into(),
            "-o".into(),
            "pipefail".into(),
            "-c".into()
        ])
    );
    assert_eq!(
        body_err("SHELL /bin/bash -c"),
        "line 2: SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(
        body_err("SHELL []"),
        "line 2: SHELL requires at least one argument"
    );
    assert_eq!(body_err("CMD --x=1 y"), "line 2: unknown flag: --x");
}

// ------------------------------------------------------------- COPY, ADD

#[test]
fn copy_flags_and_forms() {
    let c = copy("COPY --from=build --chown=app:app --chmod=0755 --link --parents --exclude=*.md --exclude=tmp/ a b/ /dst/");
    assert_eq!(c.sources, vec![path("a"), path("b/")]);
    assert_eq!(c.dest, "/dst/");
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.chown.as_deref(), Some("app:app"));
    assert_eq!(c.chmod.as_deref(), Some("0755"));
    assert!(c.link && c.parents);
    assert_eq!(c.excludes, ["*.md", "tmp/"]);
    let c = copy("COPY [\"with space\", \"/d st/\"]");
    assert_eq!(c.sources, vec![path("with space")]);
    assert_eq!(c.dest, "/d st/");
    assert!(!copy("COPY --link=false a b").link);
    assert_eq!(
        body_err("COPY --link=maybe a b"),
        "line 2: expecting boolean value for flag --link, not: maybe"
    );
    assert_eq!(
        body_err("COPY --checksum=x a b"),
        "line 2: unknown flag: --checksum"
    );
    assert_eq!(
        body_err("COPY a <<EOF\nEOF"),
        "line 2: COPY cannot accept a heredoc as a destination"
    );
    assert_eq!(
        body_err("COPY"),
        "line 2: COPY requires at least two arguments, but only one was provided. Destination could not be determined"
    );
}

#[test]
fn add_flags() {
    let InstructionKind::Add(a) = kind("ADD --checksum=sha256:abc --keep-git-dir --chown=1:1 --chmod=644 --link --unpack=false --exclude=x https://example.com/a.tar.gz git@github.com:o/r.git /dst") else {
        panic!()
    };
    assert_eq!(
        a.sources,
        vec![
            path("https://example.com/a.tar.gz"),
            path("git@github.com:o/r.git")
        ]
    );
    assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
    assert_eq!(a.keep_git_dir, Some(true));
    assert_eq!(a.unpack, Some(false));
    assert_eq!(
        (a.chown.as_deref(), a.chmod.as_deref(), a.link),
        (Some("1:1"), Some("644"), true)
    );
    assert_eq!(a.excludes, ["x"]);
    let InstructionKind::Add(a) = kind("ADD a b") else {
        panic!()
    };
    assert_eq!((a.keep_git_dir, a.unpack), (None, None));
    assert_eq!(body_err("ADD --from=x a b"), "line 2: unknown flag: --from");
}

// ---------------------------------------------------------- ENV, ARG, LABEL

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v.into(),
    }
}

#[test]
fn env_forms() {
    assert_eq!(
        kind("ENV a=b c=\"d e\" f=g\\ h"),
        InstructionKind::Env(vec![kv("a", "b"), kv("c", "\"d e\""), kv("f", "g\\ h")])
    );
    assert_eq!(
        kind("ENV PATH /usr/local/bin:$PATH  extra words"),
        InstructionKind::Env(vec![kv("PATH", "/usr/local/bin:$PATH  extra words")])
    );
    assert_eq!(kind("ENV a="), InstructionKind::Env(vec![kv("a", "")]));
    assert_eq!(
        body_err("ENV a=b c"),
        "line 2: Syntax error - can't find = in \"c\". Must be of the form: name=value"
    );
    assert_eq!(
        body_err("ENV onlyname"),
        "line 2: ENV must have two arguments"
    );
    assert_eq!(
        body_err("ENV"),
        "line 2: ENV requires at least one argument"
    );
    // The raw value expands (and loses its quotes) with expand_word.
    let InstructionKind::Env(e) = kind("ENV c=\"d $X\"") else {
        panic!()
    };
    assert_eq!(
        expand_word(&e[0].value, &vec![("X", "1")], '\\').unwrap(),
        "d 1"
    );
}

#[test]
fn arg_forms() {
    let InstructionKind::Arg(a) = kind("ARG A B=2 C=\"x y\" D=") else {
        panic!()
    };
    let got: Vec<_> = a
        .iter()
        .map(|d| (d.name.as_str(), d.default.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("A", None),
            ("B", Some("2")),
            ("C", Some("\"x y\"")),
            ("D", Some(""))
        ]
    );
    assert_eq!(body_err("ARG =x"), "line 2: ARG names can not be blank");
    assert_eq!(
        body_err("ARG"),
        "line 2: ARG requires at least one argument"
    );
}

#[test]
fn label_forms() {
    assert_eq!(
        kind("LABEL org.opencontainers.image.title=\"My App\" version=1.0 \"com.example.quoted key\"=\"v\""),
        InstructionKind::Label(vec![
            kv("org.opencontainers.image.title", "\"My App\""),
            kv("version", "1.0"),
            kv("\"com.example.quoted key\"", "\"v\""),
        ])
    );
    assert_eq!(
        kind("LABEL description This is legacy"),
        InstructionKind::Label(vec![kv("description", "This is legacy")])
    );
    assert_eq!(body_err("LABEL =x"), "line 2: LABEL names can not be blank");
    assert_eq!(
        body_err("LABEL"),
        "line 2: LABEL requires at least one argument"
    );
}

// ------------------------------------- EXPOSE, WORKDIR, USER, VOLUME, etc.

#[test]
fn simple_instructions() {
    assert_eq!(
        kind("EXPOSE 8080/tcp 53/udp  443"),
        InstructionKind::Expose(vec!["443".into(), "53/udp".into(), "8080/tcp".into()])
    );
    assert_eq!(
        kind("WORKDIR /path with/space"),
        InstructionKind::Workdir("/path with/space".into())
    );
    assert_eq!(
        kind("USER app:app"),
        InstructionKind::User("app:app".into())
    );
    assert_eq!(
        kind("VOLUME [\"/data\", \"/logs\"]"),
        InstructionKind::Volume(vec!["/data".into(), "/logs".into()])
    );
    assert_eq!(
        kind("VOLUME /data /logs"),
        InstructionKind::Volume(vec!["/data".into(), "/logs".into()])
    );
    assert_eq!(
        kind("STOPSIGNAL SIGTERM"),
        InstructionKind::StopSignal("SIGTERM".into())
    );
    assert_eq!(
        kind("MAINTAINER Jane <jane@example.com>"),
        InstructionKind::Maintainer("Jane <jane@example.com>".into())
    );
    assert_eq!(
        body_err("EXPOSE"),
        "line 2: EXPOSE requires at least one argument"
    );
    assert_eq!(
        body_err("WORKDIR"),
        "line 2: WORKDIR requires exactly one argument"
    );
    assert_eq!(
        body_err("USER"),
        "line 2: USER requires exactly one argument"
    );
    assert_eq!(
        body_err("STOPSIGNAL"),
        "line 2: STOPSIGNAL requires exactly one argument"
    );
    assert_eq!(
        body_err("MAINTAINER"),
        "line 2: MAINTAINER requires exactly one argument"
    );
    assert_eq!(
        body_err("VOLUME"),
        "line 2: VOLUME requires at least one argument"
    );
    assert_eq!(
        body_err("VOLUME [\"\"]"),
        "line 2: VOLUME specified can not be an empty string"
    );
    assert_eq!(body_err("WORKDIR --x /a"), "line 2: unknown flag: --x");
}

#[test]
fn instructions_are_case_insensitive() {
    let i = body("run a\nRuN b\nworkdir /w\ncOpY x y\n");
    let names: Vec<_> = i.iter().map(|i| i.kind.name()).collect();
    assert_eq!(names, ["RUN", "RUN", "WORKDIR", "COPY"]);
    assert_eq!(i[1].original, "RuN b");
}

// ------------------------------------------------------------ HEALTHCHECK

#[test]
fn healthcheck() {
    assert_eq!(
        kind("HEALTHCHECK NONE"),
        InstructionKind::Healthcheck(Healthcheck::None)
    );
    assert_eq!(
        kind("HEALTHCHECK none"),
        InstructionKind::Healthcheck(Healthcheck::None)
    );
    let InstructionKind::Healthcheck(h) = kind("HEALTHCHECK --interval=30s --timeout=5s --start-period=1m --start-interval=500ms --retries=3 CMD curl -f http://localhost/ || exit 1") else {
        panic!()
    };
    assert_eq!(
        h,
        Healthcheck::Cmd {
            command: shell("curl -f http://localhost/ || exit 1"),
            interval: Some(std::time::Duration::from_secs(30)),
            timeout: Some(std::time::Duration::from_secs(5)),
            start_period: Some(std::time::Duration::from_secs(60)),
            start_interval: Some(std::time::Duration::from_millis(500)),
            retries: Some(3),
        }
    );
    let InstructionKind::Healthcheck(Healthcheck::Cmd {
        command,
        interval,
        retries,
        ..
    }) = kind("HEALTHCHECK CMD [\"/bin/check\", \"-q\"]")
    else {
        panic!()
    };
    assert_eq!(
        (command, interval, retries),
        (exec(&["/bin/check", "-q"]), None, None)
    );
    assert_eq!(
        body_err("HEALTHCHECK NONE x"),
        "line 2: HEALTHCHECK NONE takes no arguments"
    );
    assert_eq!(
        body_err("HEALTHCHECK CMD"),
        "line 2: Missing command after HEALTHCHECK CMD"
    );
    assert_eq!(
        body_err("HEALTHCHECK PING x"),
        "line 2: Unknown type \"PING\" in HEALTHCHECK (try CMD)"
    );
    assert_eq!(
        body_err("HEALTHCHECK"),
        "line 2: HEALTHCHECK requires at least one argument"
    );
    assert_eq!(
        body_err("HEALTHCHECK --interval=1us CMD x"),
        "line 2: Interval \"interval\" cannot be less than 1ms"
    );
    assert_eq!(
        body_err("HEALTHCHECK --timeout=5 CMD x"),
        "line 2: time: missing unit in duration \"5\""
    );
    assert_eq!(
        body_err("HEALTHCHECK --retries=-1 CMD x"),
        "line 2: --retries cannot be negative (-1)"
    );
    assert_eq!(
        body_err("HEALTHCHECK --retries=x CMD x"),
        "line 2: strconv.ParseInt: parsing \"x\": invalid syntax"
    );
    assert_eq!(
        body_err("HEALTHCHECK --bogus=1 CMD x"),
        "line 2: unknown flag: --bogus"
    );
}

// ---------------------------------------------------------------- ONBUILD

#[test]
fn onbuild() {
    let InstructionKind::Onbuild(o) = kind("ONBUILD RUN --mount=type=cache,target=/c make") else {
        panic!()
    };
    assert_eq!(o.expression, "RUN --mount=type=cache,target=/c make");
    let InstructionKind::Run(r) = &o.instruction.kind else {
        panic!()
    };
    assert_eq!(r.command, shell("make"));
    assert_eq!(r.mounts[0].target.as_deref(), Some("/c"));
    assert_eq!(o.instruction.line, 2);

    let InstructionKind::Onbuild(o) = kind("onbuild copy <<a.txt /a\nhello\na.txt") else {
        panic!()
    };
    assert_eq!(o.expression, "copy <<a.txt /a\nhello\na.txt");
    let InstructionKind::Copy(c) = &o.instruction.kind else {
        panic!()
    };
    let [CopySource::Heredoc(h)] = c.sources.as_slice() else {
        panic!()
    };
    assert_eq!((h.name.as_str(), h.content.as_str()), ("a.txt", "hello\n"));

    assert_eq!(
        body_err("ONBUILD ONBUILD RUN x"),
        "line 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(
        body_err("ONBUILD FROM x"),
        "line 2: FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        body_err("ONBUILD maintainer x"),
        "line 2: MAINTAINER isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        body_err("ONBUILD"),
        "line 2: ONBUILD requires at least one argument"
    );
    assert_eq!(
        body_err("ONBUILD RUNN x"),
        "line 2: unknown instruction: RUNN (did you mean RUN?)"
    );
}

// --------------------------------------------------------------- heredocs

#[test]
fn run_heredocs() {
    let r = run("RUN <<EOF\necho $HOME\n\techo tab\nEOF");
    assert_eq!(r.command, shell("<<EOF"));
    let h = &r.heredocs[0];
    assert_eq!(
        (h.name.as_str(), h.expand, h.chomp, h.fd),
        ("EOF", true, false, 0)
    );
    assert_eq!(h.content, "echo $HOME\n\techo tab\n");

    let r = run("RUN <<-EOT\n\techo tab\n\tEOT");
    assert!(r.heredocs[0].chomp);
    assert_eq!(r.heredocs[0].content, "\techo tab\n");
    assert_eq!(r.heredocs[0].data(), "echo tab\n");

    for q in ["<<\"EOF\"", "<<'EOF'", "<<E'O'F"] {
        let r = run(&format!("RUN {q}\necho $X\nEOF"));
        assert_eq!(r.heredocs[0].name, "EOF", "{q}");
        assert!(!r.heredocs[0].expand, "{q}");
    }

    let r = run("RUN python3 <<EOF\nprint('hi')\nEOF");
    assert_eq!(r.command, shell("python3 <<EOF"));
    assert_eq!(r.heredocs[0].content, "print('hi')\n");

    let r = run("RUN cat <<EOF > /etc/x && cat 3<<X\nhello\nEOF\nthree\nX");
    assert_eq!(r.heredocs.len(), 2);
    assert_eq!(r.heredocs[1].fd, 3);
    assert_eq!(r.heredocs[1].content, "three\n");

    let r = run("RUN --mount=type=cache,target=/c <<EOF\nmake\nEOF");
    assert_eq!(r.mounts.len(), 1);
    assert_eq!(r.heredocs[0].content, "make\n");
}

#[test]
fn several_heredocs_in_one_instruction() {
    let ins = body("RUN <<A <<B\necho a\nA\necho b\nB\nCOPY <<a.txt <<b.txt /dest/\nfirst\na.txt\nsecond\nb.txt\nRUN next");
    assert_eq!(ins.len(), 3);
    let InstructionKind::Run(r) = &ins[0].kind else {
        panic!()
    };
    let docs: Vec<_> = r
        .heredocs
        .iter()
        .map(|h| (h.name.as_str(), h.content.as_str()))
        .collect();
    assert_eq!(docs, [("A", "echo a\n"), ("B", "echo b\n")]);
    assert_eq!((ins[0].line, ins[0].end_line), (2, 6));
    let InstructionKind::Copy(c) = &ins[1].kind else {
        panic!()
    };
    let docs: Vec<_> = c
        .sources
        .iter()
        .map(|s| match s {
            CopySource::Heredoc(h) => (h.name.as_str(), h.content.as_str()),
            CopySource::Path(p) => panic!("{p}"),
        })
        .collect();
    assert_eq!(docs, [("a.txt", "first\n"), ("b.txt", "second\n")]);
    assert_eq!(c.dest, "/dest/");
    assert_eq!(ins[2].line, 12);
}

#[test]
fn heredoc_bodies_are_verbatim() {
    // Comments, blank lines, escapes and instruction-like lines stay in the
    // body. "EOF " (trailing space) is not the delimiter.
    assert_eq!(
        body_err("RUN <<EOF\n# comment\n\nFROM x \\\nEOF "),
        "line 2: unterminated heredoc EOF"
    );
    let ins = body("RUN <<EOF\n# comment\n\nFROM x \\\nEOF\nRUN y");
    let InstructionKind::Run(r) = &ins[0].kind else {
        panic!()
    };
    assert_eq!(r.heredocs[0].content, "# comment\n\nFROM x \\\n");
    assert_eq!(ins.len(), 2);
}

#[test]
fn heredocs_mixed_with_paths_and_in_add() {
    let InstructionKind::Add(a) = kind("ADD file <<inline.txt /d/\ncontent\ninline.txt") else {
        panic!()
    };
    assert_eq!(a.sources[0], path("file"));
    let CopySource::Heredoc(h) = &a.sources[1] else {
        panic!()
    };
    assert_eq!(
        (h.name.as_str(), h.content.as_str()),
        ("inline.txt", "content\n")
    );
}

#[test]
fn no_heredocs_in_exec_form_or_other_instructions() {
    let ins = body("RUN [\"<<EOF\"]\nUSER <<X");
    let InstructionKind::Run(r) = &ins[0].kind else {
        panic!()
    };
    assert!(r.heredocs.is_empty());
    assert_eq!(r.command, exec(&["<<EOF"]));
    assert_eq!(ins[1].kind, InstructionKind::User("<<X".into()));
    // Quoted markers are not heredocs.
    assert!(run("RUN echo '<<EOF'").heredocs.is_empty());
    assert!(run("RUN echo \"<<EOF\"").heredocs.is_empty());
}

#[test]
fn unterminated_heredocs() {
    assert_eq!(
        body_err("RUN <<A <<B\nx\nA\ny"),
        "line 2: unterminated heredoc B"
    );
    assert_eq!(
        body_err("COPY <<EOF /x\n  EOF"),
        "line 2: unterminated heredoc EOF"
    );
}

// ------------------------------------------------------------ substitution

#[test]
fn substitution_in_builder_use() {
    let d = ok("ARG VERSION=3.19\nFROM alpine:${VERSION:-latest}\n");
    let args: Vec<(String, String)> = d
        .global_args
        .iter()
        .map(|a| (a.name.clone(), a.default.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        expand_word(&d.stages[0].base, &args, d.directives.escape).unwrap(),
        "alpine:3.19"
    );
    assert_eq!(
        expand_words("80/tcp ${PORTS}", &vec![("PORTS", "443 8443")], '\\').unwrap(),
        ["80/tcp", "443", "8443"]
    );
    assert_eq!(
        expand_word("${MISSING:?must be set}", &EmptyEnv, '\\')
            .unwrap_err()
            .to_string(),
        "failed to process \"${MISSING:?must be set}\": MISSING: must be set"
    );
    assert_eq!(
        expansion_targets("copy"),
        [
            "sources",
            "destination",
            "--chown",
            "--chmod",
            "heredoc bodies"
        ]
    );
}

// -------------------------------------------------------------- stages

#[test]
fn stages_and_global_args() {
    let d = ok("ARG A\nARG B=1 C\nFROM x AS one\nARG A\nRUN a\nFROM one\nRUN b\n");
    let names: Vec<_> = d
        .global_args
        .iter()
        .map(|a| (a.name.as_str(), a.line))
        .collect();
    assert_eq!(names, [("A", 1), ("B", 2), ("C", 2)]);
    assert_eq!(d.stages.len(), 2);
    assert_eq!(d.stages[0].instructions.len(), 2);
    assert!(matches!(
        d.stages[0].instructions[0].kind,
        InstructionKind::Arg(_)
    ));
    assert_eq!(d.stages[1].base, "one");
    assert_eq!(d.stages[1].line, 6);
    assert_eq!(d.stages[1].instructions[0].line, 7);
    let parsed: Dockerfile = "FROM a\n".parse().unwrap();
    assert_eq!(parsed.stages.len(), 1);
}

#[test]
fn serializes_to_json() {
    let d = ok("FROM a\nRUN --mount=type=cache,target=/c x\n");
    let json = serde_json::to_string(&d).unwrap();
    let back: Dockerfile = serde_json::from_str(&json).unwrap();
    assert_eq!(back, d);
}

// ----------------------------------------------------------------- fuzz

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const FRAGMENTS: &[&str] = &[
    "FROM ",
    "from ",
    "RUN ",
    "COPY ",
    "ADD ",
    "ENV ",
    "ARG ",
    "LABEL ",
    "EXPOSE ",
    "CMD ",
    "ENTRYPOINT ",
    "SHELL ",
    "HEALTHCHECK ",
    "ONBUILD ",
    "WORKDIR ",
    "USER ",
    "VOLUME ",
    "STOPSIGNAL ",
    "MAINTAINER ",
    "NONE ",
    "CMD ",
    " AS ",
    "scratch",
    "alpine",
    "build",
    "--mount=",
    "type=cache,target=/x",
    "type=secret,id=a",
    "type=tmpfs,size=1m",
    ",uid=$U",
    "--from=",
    "--chown=",
    "--network=",
    "--interval=",
    "--retries=",
    "--",
    "--link ",
    " ",
    "\t",
    "\n",
    "\n",
    "\n",
    "\r\n",
    "\\\n",
    "`\n",
    "\\",
    "`",
    "# escape=`\n",
    "# syntax=x\n",
    "#",
    "=",
    "\"",
    "'",
    "[",
    "]",
    ",",
    "[\"a\", \"b\"]",
    "[1]",
    "{",
    "}",
    "$",
    "${",
    "${A:-b}",
    "${A#*}",
    "${A/x/y}",
    ":",
    "-",
    "+",
    "?",
    "%",
    "<<",
    "<<-",
    "<<EOF",
    "<<'EOF'",
    "EOF\n",
    "\tEOF\n",
    "A\n",
    "a=b ",
    "x",
    "y",
    "1",
    "é",
    "\u{a0}",
    "\u{feff}",
    "\u{85}",
    "\0",
    "한",
];

fn random_text(rng: &mut XorShift) -> String {
    let n = rng.below(40);
    let mut s = String::new();
    for _ in 0..n {
        s.push_str(FRAGMENTS[rng.below(FRAGMENTS.len())]);
    }
    s
}

fn mutate(rng: &mut XorShift, base: &str) -> String {
    let mut chars: Vec<char> = base.chars().collect();
    for _ in 0..1 + rng.below(6) {
        if chars.is_empty() {
            break;
        }
        let i = rng.below(chars.len());
        match rng.below(4) {
            0 => {
                chars.remove(i);
            }
            1 => {
                let frag = FRAGMENTS[rng.below(FRAGMENTS.len())];
                for (k, c) in frag.chars().enumerate() {
                    chars.insert(i + k, c);
                }
            }
            2 => {
                let j = rng.below(chars.len());
                chars.swap(i, j);
            }
            _ => {
                let c = char::from_u32(rng.below(0x3000) as u32).unwrap_or('?');
                chars[i] = c;
            }
        }
    }
    chars.into_iter().collect()
}

const SEEDS: &[&str] = &[
    "FROM python:3.9-slim\nWORKDIR /app\nCOPY requirements.txt .\nRUN pip install -r requirements.txt\nCOPY . .\nEXPOSE 5000\nCMD [\"python\", \"app.py\"]\n",
    "# escape=`\nARG V=1\nFROM --platform=$P a:${V} AS b\nRUN --mount=type=cache,target=/c,sharing=locked `\n  make\nCOPY <<a.txt <<-b.txt /d/\nx\na.txt\n\ty\n\tb.txt\n",
    "FROM a\nRUN <<A <<B\na\nA\nb\nB\nHEALTHCHECK --interval=5s CMD [\"x\"]\nONBUILD RUN <<EOF\nz\nEOF\nENV a=b c d\nLABEL \"k\"=\"v w\"\n",
];

#[test]
fn random_inputs_never_panic() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let env = vec![("A", "xaxb"), ("U", "1")];
    let mut parsed_ok = 0;
    for i in 0..6000 {
        let text = if i % 2 == 0 {
            random_text(&mut rng)
        } else {
            let seed = SEEDS[rng.below(SEEDS.len())];
            mutate(&mut rng, seed)
        };
        let _ = ast::parse_ast(&text);
        if let Ok(d) = parse(&text) {
            parsed_ok += 1;
            // Exercise the expansion helpers on whatever came out.
            for s in &d.stages {
                let _ = expand_word(&s.base, &env, d.directives.escape);
                for ins in &s.instructions {
                    let _ = expand_words(&ins.original, &env, d.directives.escape);
                    if let InstructionKind::Run(r) = &ins.kind {
                        for m in &r.mounts {
                            let _ = m.resolve(&mut |v| {
                                expand_word(v, &env, '\\').map_err(|e| e.to_string())
                            });
                        }
                    }
                }
            }
        }
        for esc in ['\\', '`'] {
            let mut lex = Lexer::new(esc);
            let _ = lex.process_words(&text, &env);
            lex.raw_quotes = true;
            lex.raw_escapes = true;
            lex.skip_unset_env = true;
            let _ = lex.process_word(&text, &env);
            let _ = expand_heredoc(&text, &env);
        }
    }
    // The generator should produce some valid Dockerfiles, too.
    assert!(parsed_ok > 50, "only {parsed_ok} inputs parsed");
}

#[test]
fn pathological_inputs_do_not_overflow() {
    let onbuilds = "ONBUILD ".repeat(20_000) + "RUN x";
    assert!(parse(&format!("FROM a\n{onbuilds}\n")).is_err());
    let nested = format!(
        "FROM a\nCOPY {}x{} /d\n",
        "${a:-".repeat(5_000),
        "}".repeat(5_000)
    );
    assert!(parse(&nested).is_ok());
    let deep_json = format!("FROM a\nRUN {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    assert!(parse(&deep_json).is_err());
    let long_pattern = format!("${{A#{}}}", "*".repeat(5_000));
    assert!(expand_word(&long_pattern, &vec![("A", "x".repeat(2_000))], '\\').is_ok());
}
