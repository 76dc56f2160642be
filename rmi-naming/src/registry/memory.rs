//! The in-memory registry: names to URIs and metadata tags, with Pyro5's semantics.

use std::collections::{BTreeMap, BTreeSet};

use rmi_core::Uri;

use super::NAME_SERVER_NAME;
use crate::NamingError;

/// One registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where the object is.
    pub uri: Uri,
    /// Its metadata tags.
    pub metadata: BTreeSet<String>,
}

/// Names and their entries, with Pyro5's semantics for every operation.
#[derive(Debug, Default)]
pub struct Registry {
    entries: BTreeMap<String, Entry>,
}

/// Compiles a Pyro-style pattern: like Python's `re.match`, anchored at the start only.
fn anchored(regex: &str) -> Result<regex::Regex, NamingError> {
    regex::Regex::new(&format!("^(?:{regex})"))
        .map_err(|e| NamingError::new(format!("invalid regex {regex:?}: {e}")))
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers `name`; with `safe`, refuses a name already registered.
    pub fn register(
        &mut self,
        name: &str,
        uri: Uri,
        safe: bool,
        metadata: BTreeSet<String>,
    ) -> Result<(), NamingError> {
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            return Err(NamingError::new(format!(
                "invalid name {name:?}: names may not be empty or contain whitespace"
            )));
        }
        if !uri.is_direct() {
            return Err(NamingError::new(format!(
                "only PYRO: uris can be registered, not {uri}"
            )));
        }
        if safe && self.entries.contains_key(name) {
            return Err(NamingError::new(format!("name already registered: {name}")));
        }
        self.entries
            .insert(name.to_owned(), Entry { uri, metadata });
        Ok(())
    }

    /// The entry for `name`.
    pub fn lookup(&self, name: &str) -> Result<&Entry, NamingError> {
        self.entries
            .get(name)
            .ok_or_else(|| NamingError::new(format!("unknown name: {name}")))
    }

    /// Replaces the metadata of `name`.
    pub fn set_metadata(
        &mut self,
        name: &str,
        metadata: BTreeSet<String>,
    ) -> Result<(), NamingError> {
        let entry = self
            .entries
            .get_mut(name)
            .ok_or_else(|| NamingError::new(format!("unknown name: {name}")))?;
        entry.metadata = metadata;
        Ok(())
    }

    /// Removes by exact name, else by prefix, else by regex; returns how many went.
    /// The name server's own entry is never removed.
    pub fn remove(
        &mut self,
        name: Option<&str>,
        prefix: Option<&str>,
        regex: Option<&str>,
    ) -> Result<u32, NamingError> {
        if let Some(name) = name {
            if name != NAME_SERVER_NAME && self.entries.remove(name).is_some() {
                return Ok(1);
            }
            return Ok(0);
        }
        let doomed: Vec<String> = if let Some(prefix) = prefix {
            self.entries
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect()
        } else if let Some(regex) = regex {
            let re = anchored(regex)?;
            self.entries
                .keys()
                .filter(|k| re.is_match(k))
                .cloned()
                .collect()
        } else {
            return Ok(0);
        };
        let mut count = 0;
        for name in doomed.iter().filter(|n| *n != NAME_SERVER_NAME) {
            self.entries.remove(name);
            count += 1;
        }
        Ok(count)
    }

    /// Names with their entries, optionally filtered by prefix or by regex (not both).
    pub fn list(
        &self,
        prefix: Option<&str>,
        regex: Option<&str>,
    ) -> Result<Vec<(&String, &Entry)>, NamingError> {
        match (prefix, regex) {
            (Some(_), Some(_)) => Err(NamingError::new("filter on prefix or on regex, not both")),
            (Some(prefix), None) => Ok(self
                .entries
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .collect()),
            (None, Some(regex)) => {
                let re = anchored(regex)?;
                Ok(self
                    .entries
                    .iter()
                    .filter(|(k, _)| re.is_match(k))
                    .collect())
            }
            (None, None) => Ok(self.entries.iter().collect()),
        }
    }

    /// Entries whose metadata has all of `meta_all`, or any of `meta_any` (not both; neither
    /// gives nothing).
    pub fn yplookup(
        &self,
        meta_all: Option<&BTreeSet<String>>,
        meta_any: Option<&BTreeSet<String>>,
    ) -> Result<Vec<(&String, &Entry)>, NamingError> {
        match (meta_all, meta_any) {
            (Some(_), Some(_)) => Err(NamingError::new("give meta_all or meta_any, not both")),
            (Some(all), None) => Ok(self
                .entries
                .iter()
                .filter(|(_, e)| all.is_subset(&e.metadata))
                .collect()),
            (None, Some(any)) => Ok(self
                .entries
                .iter()
                .filter(|(_, e)| !any.is_disjoint(&e.metadata))
                .collect()),
            (None, None) => Ok(Vec::new()),
        }
    }

    /// Number of names, the name server's own included.
    pub fn count(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(n: u16) -> Uri {
        Uri::tcp("obj", "127.0.0.1", n)
    }

    fn tags(t: &[&str]) -> BTreeSet<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn regex_matches_at_the_start_like_python_re_match() {
        let mut r = Registry::new();
        r.register("app.one", uri(1), false, tags(&[])).unwrap();
        r.register("xapp.two", uri(2), false, tags(&[])).unwrap();
        let names: Vec<_> = r
            .list(None, Some("app"))
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(names, ["app.one"]);
        assert!(r.list(None, Some("(")).is_err());
        assert!(r.list(Some("a"), Some("b")).is_err());
    }

    #[test]
    fn remove_spares_the_name_server() {
        let mut r = Registry::new();
        r.register(NAME_SERVER_NAME, uri(9), false, tags(&[]))
            .unwrap();
        r.register("Pyro.other", uri(1), false, tags(&[])).unwrap();
        assert_eq!(r.remove(None, Some("Pyro."), None).unwrap(), 1);
        assert_eq!(r.remove(Some(NAME_SERVER_NAME), None, None).unwrap(), 0);
        assert_eq!(r.count(), 1);
    }

    #[test]
    fn only_direct_uris_register() {
        let mut r = Registry::new();
        let err = r
            .register("x", "PYRONAME:y".parse().unwrap(), false, tags(&[]))
            .unwrap_err();
        assert!(err.message.contains("only PYRO:"));
    }
}
