//! No secret ever leaves ecs-exec: every flow, successes and failures, runs at the highest
//! verbosity, and the secret key, the session token, every data channel token the emulator
//! issued (ExecuteCommand and ResumeSession) and every KMS data key (the plaintext of the KMS
//! cluster's sessions, raw, in base64 and in hex) must appear nowhere in stdout, stderr or any
//! file the runs wrote. Wrong credentials fail at once with AWS's error and exit 77.

use std::path::Path;

use crate::e2e_support::{self, Outcome, World, pseudo_random_bytes};

const SESSION_TOKEN: &str = "e2e-session-token-must-never-be-printed";

/// Every file under `dir`, recursively, as bytes.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            found.push((path, bytes));
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    contains_bytes(haystack, needle.as_bytes())
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[test]
fn no_secret_appears_in_any_output_or_file_at_the_highest_verbosity() {
    let world = World::start_with(|config| {
        config.credentials[0].session_token = Some(SESSION_TOKEN.into());
        // The first session of each run is cut once, so resumes (and their tokens) happen.
        config.faults.disconnect_after_frames = Some(60);
        config.agent.reconnect_grace_secs = 60;
    });
    let verbose = |words: &[&str]| {
        let mut command = world.bare_command();
        command.arg("-vv").env("CONNECTION_DEBUG", "1").args(words);
        command
    };
    let web = ["--cluster", "demo", "--service-name", "web"];
    let mut outcomes: Vec<(&str, Outcome)> = Vec::new();

    let mut words = web.to_vec();
    outcomes.push(("small one-off", world.run(verbose(&words), b"echo hi")));
    let mut inlined = web.to_vec();
    inlined.push("--inline-input");
    outcomes.push(("inlined one-off", world.run(verbose(&inlined), b"echo hi")));
    words.extend(["--pipe", "cat"]);
    let input = pseudo_random_bytes(512 * 1024);
    let streamed = world.run(verbose(&words), &input);
    assert!(
        streamed.stdout == input,
        "the streamed run itself must work"
    );
    outcomes.push(("streamed one-off, resumed", streamed));
    let mut words = web.to_vec();
    words.extend(["--interactive", "--pipe", "/bin/bash"]);
    outcomes.push((
        "interactive, stdin a pipe",
        world.run(verbose(&words), b"echo interactive\nexit 4\n"),
    ));
    outcomes.push((
        "remote failure",
        world.run(verbose(&web), b"echo failing >&2; exit 9"),
    ));
    outcomes.push((
        "no agent",
        world.run(
            verbose(&["--cluster", "demo", "--service-name", "no-agent"]),
            b"echo hi",
        ),
    ));
    outcomes.push((
        "unknown cluster",
        world.run(
            verbose(&["--cluster", "nope", "--service-name", "web"]),
            b"echo hi",
        ),
    ));
    let secure = ["--cluster", "secure", "--service-name", "web"];
    outcomes.push((
        "KMS one-off",
        world.run(verbose(&secure), b"echo encrypted; exit 2"),
    ));
    let mut words = secure.to_vec();
    words.extend(["--pipe", "cat"]);
    let encrypted = world.run(verbose(&words), &input);
    assert!(
        encrypted.stdout == input,
        "the encrypted streamed run itself must work: {}",
        encrypted.stderr
    );
    outcomes.push(("KMS streamed one-off, resumed", encrypted));
    let mut words = secure.to_vec();
    words.extend(["--interactive", "--pipe", "/bin/bash"]);
    outcomes.push((
        "KMS interactive, stdin a pipe",
        world.run(verbose(&words), b"echo interactive\nexit 4\n"),
    ));
    let mut wrong_key = verbose(&web);
    wrong_key.env(
        "AWS_SECRET_ACCESS_KEY",
        "a-wrong-secret-key-also-never-printed",
    );
    let rejected = world.run(wrong_key, b"echo hi");
    assert_eq!(rejected.code(), 77, "stderr: {}", rejected.stderr);
    assert!(
        rejected.stderr.contains("InvalidSignatureException"),
        "the AWS error is named: {}",
        rejected.stderr
    );
    outcomes.push(("wrong secret key", rejected));

    let counters = world.emulator.counters();
    assert!(counters.reconnects >= 1, "a resume happened: {counters:?}");
    let mut secrets = vec![
        world.emulator.secret_access_key().to_owned(),
        SESSION_TOKEN.to_owned(),
        "a-wrong-secret-key-also-never-printed".to_owned(),
    ];
    let tokens = world.emulator.issued_tokens();
    assert!(tokens.len() >= 5, "tokens were issued: {}", tokens.len());
    secrets.extend(tokens);
    let data_keys = world.emulator.issued_data_keys();
    assert!(
        data_keys.len() >= 3,
        "data keys were issued: {}",
        data_keys.len()
    );
    for key in &data_keys {
        use base64::Engine as _;
        secrets.push(base64::engine::general_purpose::STANDARD.encode(key));
        secrets.push(hex::encode(key));
        secrets.push(hex::encode_upper(key));
        // Each half is a key of its own.
        secrets.push(hex::encode(&key[..32]));
        secrets.push(hex::encode(&key[32..]));
        // Debug formatting of a byte array, as a careless trace would print it.
        secrets.push(format!("{:?}", &key[..16]));
    }

    for (flow, outcome) in &outcomes {
        assert!(
            !outcome.stderr.is_empty(),
            "{flow}: -vv must trace something, or this test proves nothing"
        );
        for key in &data_keys {
            for half in [&key[..32], &key[32..]] {
                assert!(
                    !contains_bytes(&outcome.stdout, half),
                    "{flow}: a data key is on stdout"
                );
                assert!(
                    !contains_bytes(outcome.stderr.as_bytes(), half),
                    "{flow}: a data key is on stderr"
                );
            }
        }
        for secret in &secrets {
            assert!(
                !contains(&outcome.stdout, secret),
                "{flow}: a secret is on stdout"
            );
            assert!(
                !outcome.stderr.contains(secret.as_str()),
                "{flow}: a secret is on stderr"
            );
        }
    }
    let written = files_under(world.workdir.path())
        .into_iter()
        .chain(files_under(e2e_support::shared_cache_dir()));
    for (path, bytes) in written {
        for key in &data_keys {
            assert!(
                !contains_bytes(&bytes, &key[..32]) && !contains_bytes(&bytes, &key[32..]),
                "a data key was written to {}",
                path.display()
            );
        }
        for secret in &secrets {
            assert!(
                !contains(&bytes, secret),
                "a secret was written to {}",
                path.display()
            );
        }
    }
}
