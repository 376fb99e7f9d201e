//! `tenure completions` and `tenure man`: a real bash completes subcommands
//! and options from the script, and `man` renders the pages.

use std::process::Command;

fn tenure() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tenure"))
}

fn script(shell: &str) -> String {
    let out = tenure().args(["completions", shell]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What bash's completion offers for the words typed so far.
fn complete_in_bash(script_path: &std::path::Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let program = format!(
        r#"source '{}'
COMP_WORDS=({line})
COMP_CWORD={}
COMP_LINE='{line}'
COMP_POINT=${{#COMP_LINE}}
_tenure tenure "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        script_path.display(),
        words.len() - 1
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_commands_and_their_options() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenure.bash");
    std::fs::write(&path, script("bash")).unwrap();
    let commands = complete_in_bash(&path, &["tenure", "ret"]);
    assert_eq!(commands, ["retention"], "{commands:?}");
    let options = complete_in_bash(&path, &["tenure", "retention", "--per"]);
    assert_eq!(options, ["--period"], "{options:?}");
    let all = complete_in_bash(&path, &["tenure", "funnel", "--"]);
    for o in ["--steps", "--window", "--by", "--data"] {
        assert!(all.iter().any(|x| x == o), "{o} in {all:?}");
    }
}

#[test]
fn zsh_and_fish_scripts_name_every_command() {
    let zsh = script("zsh");
    assert!(
        zsh.starts_with("#compdef tenure"),
        "{}",
        &zsh[..80.min(zsh.len())]
    );
    let fish = script("fish");
    for c in [
        "retention",
        "funnel",
        "segment",
        "sql",
        "serve",
        "run",
        "completions",
    ] {
        assert!(zsh.contains(c), "zsh lacks {c}");
        assert!(fish.contains(&format!("-a \"{c}\"")), "fish lacks {c}");
    }
    let bad = tenure().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bash"));
}

#[test]
fn man_pages_render_for_the_command_and_each_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = tenure()
        .arg("man")
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "tenure.1",
        "tenure-retention.1",
        "tenure-funnel.1",
        "tenure-serve.1",
    ] {
        assert!(dir.path().join(page).exists(), "{page}");
    }
    let roff = std::fs::read_to_string(dir.path().join("tenure-retention.1")).unwrap();
    assert!(
        roff.contains(".TH tenure-retention"),
        "{}",
        &roff[..200.min(roff.len())]
    );
    assert!(roff.contains("period"), "options documented");
    // The page renders as text (groff, as `man` would).
    let text = Command::new("groff")
        .args(["-man", "-Tutf8"])
        .arg(dir.path().join("tenure.1"))
        .output();
    if let Ok(text) = text {
        assert!(text.status.success());
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("retention"), "{text}");
    }
    // Without --out: tenure(1) on stdout.
    let out = tenure().arg("man").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH tenure"));
}
