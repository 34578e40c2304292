//! `kiln build --explain`: the reasons steps ran, kept from the build's events and printed
//! after the build, one line per reason under the step's title.

use kiln_builder::events::Event;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Explanations {
    inner: Mutex<Collected>,
}

#[derive(Debug, Default)]
struct Collected {
    names: BTreeMap<u32, String>,
    reasons: Vec<(u32, Vec<String>)>,
}

impl Explanations {
    pub fn record(&self, event: &Event) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Started { id, name, .. } => {
                inner.names.insert(*id, name.clone());
            }
            Event::Explained { id, reasons } => inner.reasons.push((*id, reasons.clone())),
            _ => {}
        }
    }

    /// The report, as `--explain` prints it.
    pub fn report(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.reasons.is_empty() {
            return "Why steps ran: none ran, every step came from the cache\n".to_string();
        }
        let mut text = String::from("Why steps ran:\n");
        for (id, reasons) in &inner.reasons {
            let name = inner.names.get(id).map_or("", String::as_str);
            text.push_str(&format!("#{id} {name}\n"));
            for reason in reasons {
                text.push_str(&format!("    {reason}\n"));
            }
        }
        text
    }

    pub fn print(&self) {
        let _ = std::io::stderr().write_all(self.report().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_listed_under_their_step() {
        let e = Explanations::default();
        assert!(e.report().contains("none ran"));
        e.record(&Event::Started {
            id: 2,
            name: "[2/2] COPY a /a".into(),
            line: Some(2),
        });
        e.record(&Event::Explained {
            id: 2,
            reasons: vec!["context file a changed content".into()],
        });
        assert_eq!(
            e.report(),
            "Why steps ran:\n#2 [2/2] COPY a /a\n    context file a changed content\n"
        );
    }
}
