//! Which adapter serves a pipe: matching pipe words against the programs adapters declare.
//!
//! Pure and allocation-light: it sees only pipe text and `(programs, is_third_party)` claims, never
//! a wasm instance. The rules are the ones documented on `info.programs` in `wit/adapter.wit`:
//! leading `env` (or `/path/to/env`) and `NAME=value` words are skipped, a leading `bundle exec` may be skipped, a
//! declared word without `/` also matches a path ending in `/<word>`, the longest match wins, and
//! on a tie a third-party adapter beats a built-in one (then the first loaded wins).

/// One adapter's claim, as the selector sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claimant<'a> {
    /// The programs it declares.
    pub programs: &'a [String],
    /// Loaded from a file rather than embedded.
    pub third_party: bool,
}

/// Index (into `claimants`) of the adapter that serves `pipe_words`, if any claims it.
pub(crate) fn select(pipe_words: &[String], claimants: &[Claimant<'_>]) -> Option<usize> {
    let starts = candidate_starts(pipe_words);
    let mut best: Option<(usize, bool, usize)> = None; // (matched end, third_party, index)
    for (index, claimant) in claimants.iter().enumerate() {
        for program in claimant.programs {
            let declared: Vec<&str> = program.split_whitespace().collect();
            for &start in &starts {
                let Some(end) = match_at(pipe_words, start, &declared) else {
                    continue;
                };
                let better = match best {
                    None => true,
                    Some((best_end, best_third_party, _)) => {
                        end > best_end
                            || (end == best_end && claimant.third_party && !best_third_party)
                    }
                };
                if better {
                    best = Some((end, claimant.third_party, index));
                }
            }
        }
    }
    best.map(|(_, _, index)| index)
}

/// Where the program may start: after `env`/assignments, and also after a following `bundle exec`.
fn candidate_starts(words: &[String]) -> Vec<usize> {
    let mut start = 0;
    while let Some(word) = words.get(start) {
        if word == "env" || word.ends_with("/env") || is_assignment(word) {
            start += 1;
        } else {
            break;
        }
    }
    let mut starts = vec![start];
    if words.get(start).is_some_and(|word| word == "bundle")
        && words.get(start + 1).is_some_and(|word| word == "exec")
    {
        starts.push(start + 2);
    }
    starts
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        name.starts_with(|c: char| c == '_' || c.is_ascii_alphabetic())
            && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
    })
}

/// End index of the match of `declared` at `start`, or `None`.
fn match_at(words: &[String], start: usize, declared: &[&str]) -> Option<usize> {
    if declared.is_empty() {
        return None;
    }
    for (offset, declared_word) in declared.iter().enumerate() {
        let word = words.get(start + offset)?;
        let matches = word == declared_word
            || (!declared_word.contains('/')
                && word
                    .strip_suffix(declared_word)
                    .is_some_and(|head| head.ends_with('/')));
        if !matches {
            return None;
        }
    }
    Some(start + declared.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pipe: &str) -> Vec<String> {
        shell_words::split(pipe).unwrap()
    }

    fn programs(list: &[&str]) -> Vec<String> {
        list.iter().map(|program| (*program).to_owned()).collect()
    }

    #[test]
    fn picks_by_first_words_paths_env_and_bundle_exec() {
        let shell = programs(&["sh", "bash"]);
        let rails = programs(&["rails", "bin/rails"]);
        let python = programs(&["python3"]);
        let claimants = [
            Claimant {
                programs: &shell,
                third_party: false,
            },
            Claimant {
                programs: &rails,
                third_party: false,
            },
            Claimant {
                programs: &python,
                third_party: false,
            },
        ];
        let cases = [
            ("/bin/bash", Some(0)),
            ("rails runner -", Some(1)),
            ("bundle exec rails c", Some(1)),
            ("env RAILS_ENV=production bin/rails runner -", Some(1)),
            ("./bin/rails console", Some(1)),
            ("/usr/local/bin/python3 -", Some(2)),
            ("/usr/bin/env python3 -", Some(2)),
            ("python3.12", None),
            ("mypython3", None),
            ("node", None),
            ("bundle exec", None),
            ("", None),
        ];
        for (pipe, expected) in cases {
            assert_eq!(select(&words(pipe), &claimants), expected, "pipe {pipe:?}");
        }
    }

    #[test]
    fn longest_match_then_third_party_wins() {
        let builtin = programs(&["rails", "bundle exec rails"]);
        let specific = programs(&["rails runner"]);
        let third = programs(&["rails"]);
        let claimants = [
            Claimant {
                programs: &builtin,
                third_party: false,
            },
            Claimant {
                programs: &specific,
                third_party: false,
            },
            Claimant {
                programs: &third,
                third_party: true,
            },
        ];
        assert_eq!(select(&words("rails runner -"), &claimants), Some(1));
        assert_eq!(select(&words("rails c"), &claimants), Some(2));
        // `bundle exec rails` and `rails` after a skipped `bundle exec` end at the same word.
        assert_eq!(select(&words("bundle exec rails c"), &claimants), Some(2));
        let first_third = programs(&["rails"]);
        let second_third = programs(&["rails"]);
        let two_third_parties = [
            Claimant {
                programs: &first_third,
                third_party: true,
            },
            Claimant {
                programs: &second_third,
                third_party: true,
            },
        ];
        assert_eq!(select(&words("rails"), &two_third_parties), Some(0));
    }
}
