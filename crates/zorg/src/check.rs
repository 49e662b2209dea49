//! `zorg config check FILE`: every problem in a config file, one per line, as
//! `FILE:LINE: key.path: message`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use zorg_server::config::{Config, Problem};

/// Checks `file`: prints "FILE: OK" and exits 0, or prints each problem to stderr and exits 1.
pub fn run(file: &Path) -> Result<ExitCode, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("{}: cannot read the config file: {e}", file.display()))?;
    let problems = Config::check(&text);
    if problems.is_empty() {
        println!("{}: OK", file.display());
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        eprintln!("{}", format_problem(file, p));
    }
    let n = problems.len();
    let s = if n == 1 { "" } else { "s" };
    eprintln!("{}: {n} problem{s}", file.display());
    Ok(ExitCode::FAILURE)
}

/// `FILE:LINE: path: message`, leaving out the line or path when unknown.
fn format_problem(file: &Path, p: &Problem) -> String {
    let mut out = file.display().to_string();
    if let Some(line) = p.line {
        let _ = write!(out, ":{line}");
    }
    out.push(':');
    if !p.path.is_empty() {
        let _ = write!(out, " {}:", p.path);
    }
    let _ = write!(out, " {}", p.message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(path: &str, line: Option<usize>) -> Problem {
        Problem {
            path: path.to_owned(),
            line,
            message: "is wrong".to_owned(),
        }
    }

    #[test]
    fn problems_name_file_line_and_path() {
        let f = Path::new("z.toml");
        assert_eq!(
            format_problem(f, &problem("limits.max_depth", Some(7))),
            "z.toml:7: limits.max_depth: is wrong"
        );
        assert_eq!(
            format_problem(f, &problem("domain", None)),
            "z.toml: domain: is wrong"
        );
        assert_eq!(
            format_problem(f, &problem("", Some(3))),
            "z.toml:3: is wrong"
        );
    }
}
