//! Tab completion: command names first, then what each command takes (node names, statuses,
//! settings). Pure, so that the line editor only has to call it.

use super::command::{COMMANDS, NodeState, find_spec};

/// Completions of the word that ends at `pos` in `line`: where that word starts, and the
/// candidates that extend it, in order.
pub fn complete(line: &str, pos: usize, nodes: &[String]) -> (usize, Vec<String>) {
    let Some(before) = line.get(..pos) else {
        return (pos, Vec::new());
    };
    let start = before
        .rfind(|c: char| c.is_whitespace() || c == ',' || c == '|')
        .map_or(0, |i| i + 1);
    let word = &before[start..];
    let mut earlier: Vec<&str> = before[..start].split_whitespace().collect();
    if earlier.first().is_some_and(|w| w.starts_with('@')) {
        earlier.remove(0);
    }
    let options: Vec<String> = match earlier.first() {
        None if word.starts_with('@') => nodes.iter().map(|n| format!("@{n}")).collect(),
        None => COMMANDS.iter().map(|c| c.name.to_string()).collect(),
        Some(&"help") => COMMANDS.iter().map(|c| c.name.to_string()).collect(),
        Some(&"config") => ["w=", "r=", "put_timeout_ms=", "get_timeout_ms="]
            .map(str::to_string)
            .to_vec(),
        Some(&"wait") => wait_words(&earlier[1..], nodes),
        Some(command) => match find_spec(command) {
            Some(spec) if spec.takes_nodes => nodes.to_vec(),
            _ => Vec::new(),
        },
    };
    let found = options
        .into_iter()
        .filter(|o| o.starts_with(word))
        .collect();
    (start, found)
}

/// What may come next in `wait NODE STATUS [on NODE,..] [within SECS]`.
fn wait_words(args: &[&str], nodes: &[String]) -> Vec<String> {
    match args {
        [] => {
            let mut words = nodes.to_vec();
            words.push("converged".into());
            words
        }
        [_] => NodeState::WORDS.map(str::to_string).to_vec(),
        [.., "on"] => nodes.to_vec(),
        [_, _] => vec!["on".into(), "within".into()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<String> {
        vec!["n1".into(), "n2".into(), "n3".into()]
    }

    fn at_end(line: &str) -> (usize, Vec<String>) {
        complete(line, line.len(), &nodes())
    }

    #[test]
    fn command_names_then_node_names() {
        assert_eq!(at_end("pa"), (0, vec!["pause".into(), "partition".into()]));
        assert_eq!(at_end("kill "), (5, nodes()));
        assert_eq!(at_end("kill n"), (5, nodes()));
        assert_eq!(at_end("restart n2"), (8, vec!["n2".into()]));
        assert_eq!(at_end("partition n1 | n2,"), (18, nodes()));
        assert_eq!(at_end("partition n1|n"), (13, nodes()));
        assert_eq!(at_end("get "), (4, vec![]), "keys are not guessed");
        assert_eq!(at_end("leave "), (6, nodes()));
        assert_eq!(at_end("remove n3"), (7, vec!["n3".into()]));
        assert_eq!(at_end("le"), (0, vec!["leave".into()]));
    }

    #[test]
    fn a_target_prefix_completes_and_is_skipped() {
        assert_eq!(
            at_end("@n"),
            (0, vec!["@n1".into(), "@n2".into(), "@n3".into()])
        );
        assert_eq!(
            at_end("@n2 me"),
            (4, vec!["merge".into(), "members".into()])
        );
    }

    #[test]
    fn wait_config_and_help_know_their_words() {
        let mut first = nodes();
        first.push("converged".into());
        assert_eq!(at_end("wait "), (5, first));
        assert_eq!(at_end("wait n1 s"), (8, vec!["suspect".into()]));
        assert_eq!(
            at_end("wait n3 l"),
            (8, vec!["leaving".into(), "left".into()])
        );
        assert_eq!(
            at_end("wait n1 suspect "),
            (16, vec!["on".into(), "within".into()])
        );
        assert_eq!(at_end("wait n1 suspect on "), (19, nodes()));
        assert_eq!(at_end("config w"), (7, vec!["w=".into()]));
        assert_eq!(at_end("config n"), (7, vec![]), "N is the cluster's");
        assert_eq!(at_end("help qu"), (5, vec!["quit".into()]));
    }

    #[test]
    fn a_cursor_inside_the_line_completes_the_word_before_it() {
        assert_eq!(complete("ki n1", 2, &nodes()), (0, vec!["kill".into()]));
        assert_eq!(
            complete("ki", 9, &nodes()),
            (9, vec![]),
            "a cursor past the end"
        );
    }
}
