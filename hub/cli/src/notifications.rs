//! `convoy notifications`: the receivers convoy.yaml declares and the hub's outbox (what waits,
//! what was delivered, the dead letters), as tables.

use convoy_shared::proto::NotificationsResponse;

use crate::{format_time, or_dash, print_table};

/// The answer of `convoy notifications` for a person.
pub fn table(answer: &NotificationsResponse) -> String {
    let mut out = String::new();
    if !answer.error.is_empty() {
        out += &format!("error in convoy.yaml (the last good settings stay in force): {}\n\n", answer.error);
    }
    if answer.receivers.is_empty() {
        out += "no receivers: add spec.notifications to convoy.yaml on the fleet branch\n";
    } else {
        let rows: Vec<Vec<String>> = answer
            .receivers
            .iter()
            .map(|r| {
                vec![r.name.clone(), r.kind.clone(), r.routes.to_string(), r.pending.to_string(), r.dead.to_string()]
            })
            .collect();
        out += &print_table(&["RECEIVER", "KIND", "ROUTES", "PENDING", "DEAD"], &rows);
    }
    out += &format!("commit status: {}\n", if answer.commit_status.is_empty() { "off" } else { &answer.commit_status });
    if !answer.entries.is_empty() {
        let rows: Vec<Vec<String>> = answer
            .entries
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    format_time(e.created_unix_ms),
                    e.receiver.clone(),
                    or_dash(&e.r#type),
                    or_dash(&e.environment),
                    e.state.clone(),
                    e.attempts.to_string(),
                    or_dash(&e.last_error).chars().take(80).collect(),
                ]
            })
            .collect();
        out += "\n";
        out += &print_table(&["SEQ", "CREATED", "RECEIVER", "TYPE", "ENV", "STATE", "ATTEMPTS", "LAST ERROR"], &rows);
    }
    out
}
