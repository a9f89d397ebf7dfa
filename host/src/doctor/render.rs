//! The report of `ecs-exec doctor`: a table for people (colour only on a terminal, and never
//! with `NO_COLOR`) or one JSON document for programs. Pure: strings in, string out.

use serde_json::json;

use super::checks::{Check, Status};

/// What the report is about, for its heading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heading {
    pub cluster: String,
    pub target: String,
}

/// Whether to colour: a terminal, and `NO_COLOR` unset or empty (<https://no-color.org>).
pub fn use_colour(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|value| value.is_empty())
}

fn counts(checks: &[Check]) -> [(Status, usize); 4] {
    [Status::Pass, Status::Warn, Status::Fail, Status::Skip]
        .map(|status| (status, checks.iter().filter(|c| c.status == status).count()))
}

/// The table: one line per check (`STATUS  ID  MESSAGE`), its fix below it, a summary last.
pub fn text(heading: &Heading, checks: &[Check], colour: bool) -> String {
    let width = checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    let mut out = format!(
        "ecs-exec doctor: cluster {}, {}\n\n",
        heading.cluster, heading.target
    );
    for check in checks {
        let word = format!("{:<4}", check.status.as_str());
        let word = if colour {
            let code = match check.status {
                Status::Pass => "32",
                Status::Warn => "33",
                Status::Fail => "31",
                Status::Skip => "2",
            };
            format!("\x1b[{code}m{word}\x1b[0m")
        } else {
            word
        };
        out.push_str(&format!(
            "{word}  {:<width$}  {}\n",
            check.id, check.message
        ));
        if let Some(fix) = &check.fix {
            out.push_str(&format!("      {:<width$}  fix: {fix}\n", ""));
        }
    }
    let summary: Vec<String> = counts(checks)
        .iter()
        .map(|(status, n)| format!("{n} {}", status.as_str()))
        .collect();
    out.push_str(&format!(
        "\n{} checks: {}\n",
        checks.len(),
        summary.join(", ")
    ));
    out
}

/// One JSON document: `{"cluster", "target", "checks": [{id, status, message, fix?}], "summary"}`.
pub fn json(heading: &Heading, checks: &[Check]) -> String {
    let summary: serde_json::Map<String, serde_json::Value> = counts(checks)
        .iter()
        .map(|(status, n)| (status.as_str().to_owned(), json!(n)))
        .collect();
    let document = json!({
        "cluster": heading.cluster,
        "target": heading.target,
        "checks": checks,
        "summary": summary,
    });
    format!("{document}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks() -> Vec<Check> {
        vec![
            Check {
                id: "task",
                status: Status::Pass,
                message: "t is RUNNING".into(),
                fix: None,
            },
            Check {
                id: "exec-agent",
                status: Status::Fail,
                message: "no agent".into(),
                fix: Some("start one".into()),
            },
        ]
    }

    fn heading() -> Heading {
        Heading {
            cluster: "demo".into(),
            target: "service web".into(),
        }
    }

    #[test]
    fn the_table_aligns_and_colours_only_when_asked() {
        let plain = text(&heading(), &checks(), false);
        assert!(plain.contains("pass  task        t is RUNNING\n"));
        assert!(plain.contains("fail  exec-agent  no agent\n"));
        assert!(plain.contains("                  fix: start one\n"));
        assert!(plain.ends_with("2 checks: 1 pass, 0 warn, 1 fail, 0 skip\n"));
        assert!(!plain.contains('\x1b'));
        assert!(text(&heading(), &checks(), true).contains("\x1b[31mfail\x1b[0m"));
    }

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some("".as_ref())));
        assert!(!use_colour(true, Some("1".as_ref())));
        assert!(!use_colour(false, None));
    }

    #[test]
    fn json_has_each_check_and_leaves_out_absent_fixes() {
        let value: serde_json::Value = serde_json::from_str(&json(&heading(), &checks())).unwrap();
        assert_eq!(
            value["checks"][0],
            json!({"id": "task", "status": "pass", "message": "t is RUNNING"})
        );
        assert_eq!(value["checks"][1]["fix"], "start one");
        assert_eq!(value["summary"]["fail"], 1);
    }
}
