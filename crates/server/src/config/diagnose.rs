//! Turns config text into a [`Config`] or into every problem it has.
//!
//! serde stops at the first error, so the text is parsed into a spanned tree first; unknown keys
//! are found by walking that tree against the keys `Config` serialises to, and type errors one
//! at a time: each failing value is reported at its key path and line, removed from a working
//! copy of the tree (its field then takes its default) and deserialising runs again. Values that
//! deserialise are then validated against their bounds.

use std::collections::HashMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::values::is_bare_ip;
use super::{Config, Problem};

/// More type errors than this in one file means something else is wrong; stop there.
const MAX_TYPE_ERRORS: usize = 200;

pub(super) fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    let lines = Lines::new(text);
    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        // The tree is only a best guess after a syntax error; report the syntax alone.
        return Err(errors
            .iter()
            .map(|e| Problem {
                path: String::new(),
                line: e.span().map(|s| lines.line(s.start)),
                message: format!("TOML syntax: {}", e.message().trim()),
            })
            .collect());
    }

    let mut problems = Vec::new();
    let mut work = root.clone();
    // Without a schema (it cannot fail to serialise, but no panics here) serde's
    // deny_unknown_fields still reports unknown keys, one by one, through the type-error loop.
    if let Some(schema) = schema() {
        let mut walk = UnknownKeys {
            root: &schema,
            lines: &lines,
            problems: &mut problems,
            path: Vec::new(),
        };
        walk.table(&schema, work.get_mut());
    }
    let config = deserialize_reporting(&root, work, text, &lines, &mut problems);

    if let Some(config) = &config {
        let mut key_lines = HashMap::new();
        index_lines(root.get_ref(), "", &lines, &mut key_lines);
        let reported: Vec<String> = problems.iter().map(|p| p.path.clone()).collect();
        for mut p in config.validate() {
            // A value already reported as mistyped took its default; do not report it twice.
            if reported.iter().any(|r| covers(r, &p.path)) {
                continue;
            }
            p.line = line_of(&key_lines, &p.path);
            problems.push(p);
        }
    }
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    match config {
        Some(mut config) if problems.is_empty() => {
            config.normalise();
            Ok(config)
        }
        _ => Err(problems),
    }
}

/// Deserialises `work`, reporting and removing each value serde rejects, until it succeeds.
fn deserialize_reporting(
    root: &Spanned<DeTable<'_>>,
    mut work: Spanned<DeTable<'_>>,
    text: &str,
    lines: &Lines,
    problems: &mut Vec<Problem>,
) -> Option<Config> {
    for _ in 0..MAX_TYPE_ERRORS {
        let err = match Config::deserialize(toml::de::Deserializer::from(work.clone())) {
            Ok(config) => return Some(config),
            Err(err) => err,
        };
        let span = err.span();
        let found = span
            .as_ref()
            .and_then(|s| Some((locate(work.get_ref(), s)?, s)));
        let Some((segs, span)) = found else {
            problems.push(Problem {
                path: String::new(),
                line: span.map(|s| lines.line(s.start)),
                message: err.message().to_owned(),
            });
            return None;
        };
        // Paths are named after the original tree: removals shift array indices in `work`.
        let path = path_string(&locate(root.get_ref(), span).unwrap_or_else(|| segs.clone()));
        let value = text.get(span.clone()).unwrap_or("");
        problems.push(Problem {
            message: explain(err.message(), &path, value),
            line: Some(lines.line(span.start)),
            path,
        });
        if !remove(work.get_mut(), &segs) {
            return None;
        }
    }
    None
}

/// Rewords serde's messages where an operator needs more than "invalid type".
fn explain(message: &str, path: &str, value: &str) -> String {
    let value = value.trim_matches(['"', '\'']);
    if message.contains("invalid socket address syntax") {
        return if is_bare_ip(value) {
            format!(
                "{value:?} has no port; write IP:port, e.g. \"127.0.0.1:5222\" or \"[::1]:5222\""
            )
        } else {
            format!(
                "{value:?} is not an IP address and port such as \"0.0.0.0:5222\" or \
                 \"[::]:5222\" (host names are not accepted here)"
            )
        };
    }
    if path == "domain" && message.contains("expected a sequence") {
        return "write each domain as its own [[domain]] section, with two brackets".to_owned();
    }
    // serde names Rust types; operators know numbers and quoted text.
    let mut message = message.replace("expected path string", "expected a path in quotes");
    for rust_type in ["usize", "u64", "u32"] {
        message = message.replace(
            &format!("expected {rust_type}"),
            "expected a whole number, 0 or more",
        );
    }
    message
}

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A key as written in a path: bare when TOML allows, quoted otherwise.
pub(super) fn key_string(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

fn path_string(segs: &[Seg]) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(&key_string(k));
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Whether a problem at `reported` already covers one at `path` (the same key or inside it).
fn covers(reported: &str, path: &str) -> bool {
    path.strip_prefix(reported)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Byte offset to 1-based line.
struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }
}

/// Maps every key path in the file (and every array element) to the line where it is written.
fn index_lines(table: &DeTable<'_>, prefix: &str, lines: &Lines, out: &mut HashMap<String, usize>) {
    for (k, v) in table.iter() {
        let key = key_string(k.get_ref());
        let path = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        out.insert(path.clone(), lines.line(k.span().start));
        match v.get_ref() {
            DeValue::Table(t) => index_lines(t, &path, lines, out),
            DeValue::Array(a) => {
                for (i, e) in a.iter().enumerate() {
                    let elem = format!("{path}[{i}]");
                    out.insert(elem.clone(), lines.line(e.span().start));
                    if let DeValue::Table(t) = e.get_ref() {
                        index_lines(t, &elem, lines, out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The line of `path`, or of the nearest enclosing key written in the file.
fn line_of(key_lines: &HashMap<String, usize>, path: &str) -> Option<usize> {
    let mut path = path;
    loop {
        if let Some(&line) = key_lines.get(path) {
            return Some(line);
        }
        path = &path[..path.rfind(['.', '['])?];
    }
}

/// The key path of the smallest key or value in `table` whose span contains `err` (the deepest on
/// a tie).
fn locate(table: &DeTable<'_>, err: &Range<usize>) -> Option<Vec<Seg>> {
    let mut best = None;
    locate_in_table(table, err, &mut Vec::new(), &mut best);
    best.map(|(_, segs)| segs)
}

type Best = Option<(usize, Vec<Seg>)>;

fn consider(span: Range<usize>, err: &Range<usize>, path: &[Seg], best: &mut Best) {
    if span.start > err.start || err.end > span.end {
        return;
    }
    let len = span.end - span.start;
    let better = match best {
        None => true,
        Some((l, p)) => len < *l || (len == *l && path.len() > p.len()),
    };
    if better {
        *best = Some((len, path.to_vec()));
    }
}

fn locate_in_table(table: &DeTable<'_>, err: &Range<usize>, path: &mut Vec<Seg>, best: &mut Best) {
    for (k, v) in table.iter() {
        path.push(Seg::Key(k.get_ref().to_string()));
        consider(k.span(), err, path, best);
        consider(v.span(), err, path, best);
        locate_in_value(v.get_ref(), err, path, best);
        path.pop();
    }
}

fn locate_in_value(value: &DeValue<'_>, err: &Range<usize>, path: &mut Vec<Seg>, best: &mut Best) {
    match value {
        DeValue::Table(t) => locate_in_table(t, err, path, best),
        DeValue::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                consider(e.span(), err, path, best);
                locate_in_value(e.get_ref(), err, path, best);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Removes the key or array element at `segs`; false when there is none.
fn remove(table: &mut DeTable<'_>, segs: &[Seg]) -> bool {
    match segs {
        [Seg::Key(k)] => table.remove(k.as_str()).is_some(),
        [Seg::Key(k), rest @ ..] => table
            .get_mut(k.as_str())
            .is_some_and(|v| remove_in_value(v.get_mut(), rest)),
        _ => false,
    }
}

fn remove_in_value(value: &mut DeValue<'_>, segs: &[Seg]) -> bool {
    match (value, segs) {
        (DeValue::Table(t), _) => remove(t, segs),
        (DeValue::Array(a), [Seg::Index(i)]) if *i < a.len() => {
            let old = std::mem::replace(a, DeArray::new());
            for (j, e) in old.into_iter().enumerate() {
                if j != *i {
                    a.push(e);
                }
            }
            true
        }
        (DeValue::Array(a), [Seg::Index(i), rest @ ..]) => a
            .get_mut(*i)
            .is_some_and(|e| remove_in_value(e.get_mut(), rest)),
        _ => false,
    }
}

/// Every key `Config` knows, as the table it serialises to, with optional keys filled in.
fn schema() -> Option<toml::Table> {
    let mut sample = Config::default();
    for d in &mut sample.domains {
        d.certificate = Some("certificate".into());
        d.key = Some("key".into());
        d.archive_expiry = Some(super::DurationStr::from_secs(0));
    }
    sample.federation.dnssec_trust_anchors = Some("anchors".into());
    sample.storage.key_file = Some("key_file".into());
    sample.storage.key_env = Some("key_env".into());
    sample.audit.dir = Some("dir".into());
    sample.audit.signing_key = Some("signing_key".into());
    let toml::Value::Table(mut schema) = toml::Value::try_from(&sample).ok()? else {
        return None;
    };
    // `[federation.hosts]` is a map whose keys are the operator's domains, not ours to check: a
    // non-table placeholder stops the walk there.
    if let Some(toml::Value::Table(federation)) = schema.get_mut("federation") {
        federation.insert("hosts".into(), toml::Value::Boolean(true));
    }
    Some(schema)
}

/// Walks the file's tree against the schema, reporting and removing unknown keys.
struct UnknownKeys<'a> {
    root: &'a toml::Table,
    lines: &'a Lines,
    problems: &'a mut Vec<Problem>,
    path: Vec<Seg>,
}

impl UnknownKeys<'_> {
    fn table(&mut self, schema: &toml::Table, doc: &mut DeTable<'_>) {
        let mut unknown = Vec::new();
        for (k, v) in doc.iter_mut() {
            let name: &str = k.get_ref();
            self.path.push(Seg::Key(name.to_owned()));
            match schema.get(name) {
                None => {
                    self.problems.push(Problem {
                        path: path_string(&self.path),
                        line: Some(self.lines.line(k.span().start)),
                        message: self.unknown_message(name, schema),
                    });
                    unknown.push(name.to_owned());
                }
                Some(toml::Value::Table(s)) => {
                    if let DeValue::Table(t) = v.get_mut() {
                        self.table(s, t);
                    }
                }
                Some(toml::Value::Array(a)) => {
                    if let (Some(toml::Value::Table(s)), DeValue::Array(arr)) =
                        (a.first(), v.get_mut())
                    {
                        for (i, e) in arr.iter_mut().enumerate() {
                            if let DeValue::Table(t) = e.get_mut() {
                                self.path.push(Seg::Index(i));
                                self.table(s, t);
                                self.path.pop();
                            }
                        }
                    }
                }
                Some(_) => {}
            }
            self.path.pop();
        }
        for name in unknown {
            doc.remove(name.as_str());
        }
    }

    fn unknown_message(&self, name: &str, here: &toml::Table) -> String {
        if let Some(home) = home_of(name, self.root) {
            return format!("unknown key `{name}` here; it belongs {home}");
        }
        if let Some(guess) = did_you_mean(name, here.keys().map(String::as_str)) {
            return format!("unknown key `{name}`; did you mean `{guess}`?");
        }
        let known: Vec<&str> = here.keys().map(String::as_str).collect();
        format!(
            "unknown key `{name}`; known keys here: {}",
            known.join(", ")
        )
    }
}

/// Where a key that exists elsewhere in the schema belongs, as words ("in [limits]").
fn home_of(name: &str, root: &toml::Table) -> Option<String> {
    if root.get(name).is_some_and(|v| !v.is_table()) && !is_array_of_tables(root.get(name)) {
        return Some("at the top of the file, before the first [section]".to_owned());
    }
    for (section, v) in root {
        match v {
            toml::Value::Table(t) if t.contains_key(name) => {
                return Some(format!("in [{section}]"));
            }
            toml::Value::Array(a) => {
                if let Some(toml::Value::Table(t)) = a.first()
                    && t.contains_key(name)
                {
                    return Some(format!("in a [[{section}]] section"));
                }
            }
            _ => {}
        }
    }
    None
}

fn is_array_of_tables(v: Option<&toml::Value>) -> bool {
    matches!(v, Some(toml::Value::Array(a)) if a.first().is_some_and(toml::Value::is_table))
}

/// The known key `name` was most likely meant to be: the same up to case and `_`/`-`, a few
/// letters off, or a prefix of it (`maxstanza` → `max_stanza_size`).
fn did_you_mean<'k>(name: &str, known: impl Iterator<Item = &'k str>) -> Option<&'k str> {
    let norm = |s: &str| -> Vec<char> {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let wanted = norm(name);
    let mut best: Option<(usize, &str)> = None;
    for candidate in known {
        let c = norm(candidate);
        let distance = edit_distance(&wanted, &c);
        let close = distance <= (wanted.len() / 3).max(1);
        let prefix = wanted.len() >= 4 && (c.starts_with(&wanted) || wanted.starts_with(&c));
        if (close || prefix) && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// Levenshtein distance.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let known = [
            "max_stanza_size",
            "max_depth",
            "max_attributes",
            "read_rate",
        ];
        let guess = |n| did_you_mean(n, known.iter().copied());
        assert_eq!(guess("maxstanza"), Some("max_stanza_size"));
        assert_eq!(guess("max-depth"), Some("max_depth"));
        assert_eq!(guess("max_attribtes"), Some("max_attributes"));
        assert_eq!(guess("Read_Rate"), Some("read_rate"));
        assert_eq!(guess("colour"), None);
    }

    #[test]
    fn lines_and_paths() {
        let lines = Lines::new("a\nbb\n\nc");
        assert_eq!(
            [0, 1, 2, 4, 5, 6].map(|o| lines.line(o)),
            [1, 1, 2, 2, 3, 4]
        );
        let segs = [
            Seg::Key("domain".into()),
            Seg::Index(1),
            Seg::Key("odd key".into()),
        ];
        assert_eq!(path_string(&segs), "domain[1].\"odd key\"");
        assert!(covers("domain", "domain[0].name"));
        assert!(covers("c2s.listen", "c2s.listen"));
        assert!(!covers("c2s.listen", "c2s.listen_extra"));
    }
}
