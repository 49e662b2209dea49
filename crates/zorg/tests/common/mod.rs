//! What the command-line tests share: a temporary directory with a config, and running the
//! real `zorg` binary.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const ZORG: &str = env!("CARGO_BIN_EXE_zorg");

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("zorg-cli-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes a config serving `localhost` with data in `./data` next to it; returns its path.
    pub fn config(&self, extra: &str) -> PathBuf {
        let file = self.0.join("zorg.toml");
        let text = format!(
            "data_dir = \"data\"\n[[domain]]\nname = \"localhost\"\n\
             [c2s]\nlisten = [\"127.0.0.1:0\"]\ndirect_tls = []\n{extra}"
        );
        std::fs::write(&file, text).unwrap();
        file
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs zorg with `args` in `cwd`, feeding `stdin`.
pub fn zorg(cwd: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(ZORG)
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // The process may exit without reading (e.g. on a refused JID): ignore a broken pipe.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    child.wait_with_output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
