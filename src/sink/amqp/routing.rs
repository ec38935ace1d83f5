//! `[sink.amqp] routing_key` templates: `{job_type}`, `{account_type}` and
//! `{source}` placeholders, parsed once at start-up and rendered per message.

/// One piece of a routing-key template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    JobType,
    AccountType,
    Source,
}

#[derive(Debug, Clone)]
pub struct RoutingTemplate {
    parts: Vec<Part>,
}

impl RoutingTemplate {
    pub fn parse(template: &str) -> Result<RoutingTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(format!("routing_key {template:?}: unmatched '}}'"));
            }
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("routing_key {template:?}: unclosed '{{'"))?;
            parts.push(match &after[..close] {
                "job_type" => Part::JobType,
                "account_type" => Part::AccountType,
                "source" => Part::Source,
                other => {
                    return Err(format!(
                        "routing_key {template:?}: unknown placeholder {{{other}}} \
                         (known: {{job_type}}, {{account_type}}, {{source}})"
                    ))
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(RoutingTemplate { parts })
    }

    /// Whether `{source}` occurs (then each message's own source is read).
    pub fn uses_source(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Source))
    }

    pub fn render(&self, job_type: &str, account_type: &str, source: &str) -> String {
        let mut out = String::with_capacity(32);
        for p in &self.parts {
            out.push_str(match p {
                Part::Lit(s) => s,
                Part::JobType => job_type,
                Part::AccountType => account_type,
                Part::Source => source,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_renders_and_rejects_unknown() {
        let t = RoutingTemplate::parse("charge.{job_type}.{account_type}.{source}").unwrap();
        assert_eq!(
            t.render("print", "shared", "pc1"),
            "charge.print.shared.pc1"
        );
        assert_eq!(
            RoutingTemplate::parse("fixed")
                .unwrap()
                .render("a", "b", "c"),
            "fixed"
        );
        assert!(RoutingTemplate::parse("charge.{user}").is_err());
        assert!(RoutingTemplate::parse("charge.{job_type").is_err());
        assert!(RoutingTemplate::parse("charge.}").is_err());
    }
}
