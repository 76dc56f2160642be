//! The name server's quotas ([`Limits`]): what one request and the whole registry may hold, each
//! refusal naming its setting, and the bounded cache of compiled regexes.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use parking_lot::Mutex;

use crate::NamingError;

/// The name server's quotas. Every refusal is a `NamingError` naming the setting it hit, so a
/// client knows what to change. The defaults suit a name server on a shared machine; raise them
/// knowingly (each bounds what one client can make the process allocate or compute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest name, in bytes (default 512).
    pub max_name_len: usize,
    /// Longest registered URI, in bytes as written (default 1,024: room for a long object id,
    /// a full host name or a Unix socket path). Every `list` reply carries the URIs, so one huge
    /// URI would otherwise take the room of thousands of entries.
    pub max_uri_len: usize,
    /// Most metadata tags on one entry, and in one `yplookup` query (default 64).
    pub max_tags: usize,
    /// Longest metadata tag, in bytes (default 256).
    pub max_tag_len: usize,
    /// Most names registered at once, the name server's own included (default 100,000).
    pub max_entries: usize,
    /// Most leases granted at once (default 100,000).
    pub max_leases: usize,
    /// Largest reply of `list` or `yplookup`, estimated from the names, URIs and tags it would
    /// carry, in bytes (default 16 MiB, well below a daemon's 64 MiB message limit). A bigger one
    /// is refused with an error that says to narrow it by prefix or regex.
    pub max_reply_bytes: usize,
    /// Longest regex given to `list` or `remove`, in bytes (default 1,024).
    pub max_regex_len: usize,
    /// Largest compiled regex, in bytes (`regex::RegexBuilder::size_limit`; default 1 MiB).
    pub regex_size_limit: usize,
    /// Shortest lease TTL (default 100 ms).
    pub min_lease_ttl: Duration,
    /// Longest lease TTL (default one day).
    pub max_lease_ttl: Duration,
    /// Most tags one `set_metadata` may write: the name's entries (a shared name has one per
    /// daemon) times the tags given, an entry counting one if none are given (default 65,536).
    /// Each entry's tags are written anew, so without it a request of a few KiB could rewrite
    /// millions of rows in one transaction, holding every other write up behind it.
    pub max_metadata_writes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_name_len: 512,
            max_uri_len: 1024,
            max_tags: 64,
            max_tag_len: 256,
            max_entries: 100_000,
            max_leases: 100_000,
            max_reply_bytes: 16 << 20,
            max_regex_len: 1024,
            regex_size_limit: 1 << 20,
            min_lease_ttl: Duration::from_millis(100),
            max_lease_ttl: Duration::from_secs(24 * 3600),
            max_metadata_writes: 65_536,
        }
    }
}

impl Limits {
    /// Checks a name: not empty, no whitespace or control characters (which would reach
    /// terminals and logs that print names), at most `max_name_len` bytes.
    pub(crate) fn check_name(&self, name: &str) -> Result<(), NamingError> {
        if name.len() > self.max_name_len {
            return Err(NamingError::new(format!(
                "name of {} bytes is longer than the name server's max_name_len ({})",
                name.len(),
                self.max_name_len
            )));
        }
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(NamingError::new(format!(
                "invalid name {name:?}: names may not be empty or contain whitespace or \
                 control characters"
            )));
        }
        Ok(())
    }

    /// Checks a URI (as written) against `max_uri_len`.
    pub(crate) fn check_uri(&self, uri: &str) -> Result<(), NamingError> {
        if uri.len() > self.max_uri_len {
            return Err(NamingError::new(format!(
                "uri of {} bytes is longer than the name server's max_uri_len ({})",
                uri.len(),
                self.max_uri_len
            )));
        }
        Ok(())
    }

    /// Checks a set of tags (`what` names the argument): at most `max_tags`, each at most
    /// `max_tag_len` bytes.
    pub(crate) fn check_tags(
        &self,
        tags: &BTreeSet<String>,
        what: &str,
    ) -> Result<(), NamingError> {
        if tags.len() > self.max_tags {
            return Err(NamingError::new(format!(
                "{what} has {} tags, more than the name server's max_tags ({})",
                tags.len(),
                self.max_tags
            )));
        }
        if let Some(long) = tags.iter().find(|t| t.len() > self.max_tag_len) {
            return Err(NamingError::new(format!(
                "{what} has a tag of {} bytes, longer than the name server's max_tag_len ({})",
                long.len(),
                self.max_tag_len
            )));
        }
        Ok(())
    }

    /// Checks that setting `tags` tags on `entries` entries of `name` stays within
    /// `max_metadata_writes`.
    pub(crate) fn check_metadata_writes(
        &self,
        name: &str,
        entries: usize,
        tags: usize,
    ) -> Result<(), NamingError> {
        let writes = entries.saturating_mul(tags.max(1));
        if writes > self.max_metadata_writes {
            return Err(NamingError::new(format!(
                "setting {tags} tags on the {entries} entries of {name} would write {writes}, \
                 more than the name server's max_metadata_writes ({}); give each daemon's \
                 entry its metadata when it registers",
                self.max_metadata_writes
            )));
        }
        Ok(())
    }

    /// Checks a lease TTL against `min_lease_ttl` and `max_lease_ttl`.
    pub(crate) fn check_ttl(&self, ttl: Duration) -> Result<(), NamingError> {
        if ttl < self.min_lease_ttl || ttl > self.max_lease_ttl {
            return Err(NamingError::new(format!(
                "lease TTL {ttl:?} is outside the name server's min_lease_ttl..max_lease_ttl \
                 ({:?}..{:?})",
                self.min_lease_ttl, self.max_lease_ttl
            )));
        }
        Ok(())
    }

    /// The error for a reply over `max_reply_bytes` (`what` names the operation).
    pub(crate) fn reply_too_large(&self, what: &str) -> NamingError {
        NamingError::new(format!(
            "{what} reply would exceed the name server's max_reply_bytes ({} bytes); narrow it \
             with a prefix, a regex or more tags",
            self.max_reply_bytes
        ))
    }
}

/// Compiled regexes by pattern: at most [`PatternCache::CAPACITY`], emptied when full. Patterns
/// compile outside its lock, so one slow compile never holds up another request.
#[derive(Debug, Default)]
pub(crate) struct PatternCache {
    compiled: Mutex<HashMap<String, regex::Regex>>,
}

impl PatternCache {
    /// Most patterns kept.
    pub(crate) const CAPACITY: usize = 64;

    /// The compiled form of a Pyro-style pattern (like Python's `re.match`, anchored at the
    /// start only), within `limits`.
    pub(crate) fn compile(
        &self,
        pattern: &str,
        limits: &Limits,
    ) -> Result<regex::Regex, NamingError> {
        if pattern.len() > limits.max_regex_len {
            return Err(NamingError::new(format!(
                "regex of {} bytes is longer than the name server's max_regex_len ({})",
                pattern.len(),
                limits.max_regex_len
            )));
        }
        if let Some(re) = self.compiled.lock().get(pattern) {
            return Ok(re.clone());
        }
        // The pattern alone first: one that closes the group it is put in (`x)|(?:.`) would
        // make an unanchored branch of it.
        let alone = regex::RegexBuilder::new(pattern)
            .size_limit(limits.regex_size_limit)
            .dfa_size_limit(limits.regex_size_limit)
            .build();
        let re = alone
            .and_then(|_| {
                regex::RegexBuilder::new(&format!("^(?:{pattern})"))
                    .size_limit(limits.regex_size_limit)
                    .dfa_size_limit(limits.regex_size_limit)
                    .build()
            })
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => NamingError::new(format!(
                    "regex {pattern:?} compiles to more than the name server's regex_size_limit \
                     ({} bytes)",
                    limits.regex_size_limit
                )),
                e => NamingError::new(format!("invalid regex {pattern:?}: {e}")),
            })?;
        let mut compiled = self.compiled.lock();
        if compiled.len() >= Self::CAPACITY {
            compiled.clear();
        }
        compiled.insert(pattern.to_owned(), re.clone());
        Ok(re)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_regex_is_refused_by_its_compiled_size() {
        let cache = PatternCache::default();
        let err = cache.compile(r"\w{1000}", &Limits::default()).unwrap_err();
        assert!(err.message.contains("regex_size_limit"), "{err}");
        let long = "a".repeat(2000);
        let err = cache.compile(&long, &Limits::default()).unwrap_err();
        assert!(err.message.contains("max_regex_len"), "{err}");
        // It would make `^(?:x)|(?:.)`: a branch not anchored.
        assert!(cache
            .compile("x)|(?:.", &Limits::default())
            .unwrap_err()
            .message
            .contains("invalid regex"));
        assert!(cache
            .compile("(", &Limits::default())
            .unwrap_err()
            .message
            .contains("invalid regex"));
    }

    /// Each limit is inclusive: a value at the limit passes, one past it is refused, naming
    /// the setting.
    #[test]
    fn every_limit_admits_its_own_value_and_refuses_the_next() {
        let limits = Limits {
            max_name_len: 8,
            max_uri_len: 10,
            max_tags: 2,
            max_tag_len: 3,
            max_regex_len: 5,
            min_lease_ttl: Duration::from_millis(100),
            max_lease_ttl: Duration::from_secs(10),
            ..Limits::default()
        };
        let refused = |r: Result<(), NamingError>, setting: &str| {
            let err = r.unwrap_err();
            assert!(err.message.contains(setting), "{setting}: {err}");
        };
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        limits.check_name("abcdefgh").unwrap();
        refused(limits.check_name("abcdefghi"), "max_name_len");
        refused(limits.check_name("a\u{1b}[2J"), "control characters");
        refused(limits.check_name("a\u{7}"), "control characters");
        limits.check_uri("PYRO:a@b:1").unwrap();
        refused(limits.check_uri("PYRO:a@b:12"), "max_uri_len");
        limits.check_tags(&tags(&["a", "b"]), "metadata").unwrap();
        refused(
            limits.check_tags(&tags(&["a", "b", "c"]), "metadata"),
            "max_tags",
        );
        limits.check_tags(&tags(&["abc"]), "metadata").unwrap();
        refused(
            limits.check_tags(&tags(&["abcd"]), "metadata"),
            "max_tag_len",
        );
        limits.check_ttl(Duration::from_millis(100)).unwrap();
        limits.check_ttl(Duration::from_secs(10)).unwrap();
        refused(limits.check_ttl(Duration::from_millis(99)), "min_lease_ttl");
        refused(
            limits.check_ttl(Duration::from_millis(10_001)),
            "max_lease_ttl",
        );
        refused(limits.check_ttl(Duration::from_secs(3600)), "max_lease_ttl");
        let cache = PatternCache::default();
        cache.compile("a.b.c", &limits).unwrap();
        let err = cache.compile("a.b.cd", &limits).unwrap_err();
        assert!(err.message.contains("max_regex_len"), "{err}");
    }

    #[test]
    fn a_pattern_compiles_once_while_the_cache_has_room() {
        let cache = PatternCache::default();
        for i in 0..PatternCache::CAPACITY {
            cache.compile(&format!("n{i}"), &Limits::default()).unwrap();
        }
        assert_eq!(cache.compiled.lock().len(), PatternCache::CAPACITY);
        // Full: the next new pattern starts the cache afresh.
        cache.compile("another", &Limits::default()).unwrap();
        assert_eq!(cache.compiled.lock().len(), 1);
    }

    #[test]
    fn the_pattern_cache_stays_bounded() {
        let cache = PatternCache::default();
        for i in 0..(PatternCache::CAPACITY * 3) {
            let re = cache.compile(&format!("n{i}"), &Limits::default()).unwrap();
            assert!(re.is_match(&format!("n{i}x")));
            assert!(!re.is_match(&format!("xn{i}")), "anchored at the start");
            assert!(cache.compiled.lock().len() <= PatternCache::CAPACITY);
        }
    }
}
