//! The lines of a `pip:` section this builder accepts: requirements from an index (a project
//! name with extras, version specifiers and markers) and the index options `--index-url` /
//! `--extra-index-url`. Everything else pip would take is refused here, at normalisation, so
//! a person sees it on the Environment (with its line) before any build starts: editable
//! installs, local paths, direct URLs and VCS requirements name code outside the index that a
//! lockfile could not pin by hash (and, for paths, files of the build pod), and other options
//! change pip's behaviour behind the policy's back.

/// One accepted line of a pip section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipLine {
    /// A requirement.
    Requirement {
        /// As written, whitespace collapsed.
        text: String,
        /// Its project's normalised name.
        name: String,
    },
    /// `--index-url URL` (or `-i URL`): the index to use instead of the deployment's.
    IndexUrl(String),
    /// `--extra-index-url URL`: a further index.
    ExtraIndexUrl(String),
}

/// PEP 503 normalisation of a project name: lowercase, runs of `-`, `_`, `.` become one `-`.
pub fn normalize_project(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Classifies one line of a pip section; the error says why it is refused.
pub fn parse_pip_line(line: &str) -> Result<PipLine, String> {
    let l = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if l.is_empty() {
        return Err("it is empty".into());
    }
    // `--name URL` or `--name=URL`.
    let option = |names: &[&str]| -> Option<String> {
        names.iter().find_map(|n| {
            let rest = l.strip_prefix(n)?;
            let value = rest.strip_prefix('=').or_else(|| rest.strip_prefix(' '))?;
            (!value.is_empty() && !value.contains(' ')).then(|| value.to_string())
        })
    };
    if l.starts_with('-') {
        if let Some(u) = option(&["--index-url", "-i"]) {
            return check_index(&u).map(|()| PipLine::IndexUrl(u));
        }
        if let Some(u) = option(&["--extra-index-url"]) {
            return check_index(&u).map(|()| PipLine::ExtraIndexUrl(u));
        }
        if l.starts_with("-e") || l.starts_with("--editable") {
            return Err("editable installs are not supported".into());
        }
        return Err(
            "the only options supported are --index-url and --extra-index-url (with a URL)".into(),
        );
    }
    if l.starts_with(['.', '/', '~']) || l.starts_with("file:") {
        return Err("local paths are not supported: publish the package to an index".into());
    }
    if l.contains("://") || l.contains('@') {
        return Err(
            "direct URL and VCS requirements are not supported: publish the package to an index"
                .into(),
        );
    }
    let end = l
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(l.len());
    let name = &l[..end];
    if name.is_empty()
        || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err("a requirement starts with a project name".into());
    }
    let rest = l[end..].trim_start();
    let ok_rest = rest.is_empty()
        || rest.starts_with(['[', '<', '>', '=', '!', '~', ';', ','])
        || rest.starts_with("(");
    if !ok_rest {
        return Err(format!("unexpected {rest:?} after the project name"));
    }
    Ok(PipLine::Requirement {
        name: normalize_project(name),
        text: l,
    })
}

fn check_index(url: &str) -> Result<(), String> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        if url.split('/').nth(2).is_some_and(|host| host.contains('@')) {
            return Err(
                "an index URL may not carry credentials (the deployment provides them)".into(),
            );
        }
        Ok(())
    } else {
        Err(format!("{url:?} is not an http(s) index URL"))
    }
}

/// The index URL as compared with a policy's allowlist: no trailing slash, scheme and host in
/// lowercase.
pub fn index_key(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            let mut out = format!(
                "{}://{}",
                scheme.to_ascii_lowercase(),
                host.to_ascii_lowercase()
            );
            if !path.is_empty() {
                out.push('/');
                out.push_str(path);
            }
            out
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_and_index_options() {
        for ok in [
            "flask",
            "Flask_SQLAlchemy>=3,<4",
            "requests[socks]==2.*",
            "tomli; python_version < '3.11'",
            "numpy (>=1.20)",
        ] {
            assert!(
                matches!(parse_pip_line(ok), Ok(PipLine::Requirement { .. })),
                "{ok}"
            );
        }
        assert_eq!(
            parse_pip_line("Flask_SQLAlchemy>=3").unwrap(),
            PipLine::Requirement {
                text: "Flask_SQLAlchemy>=3".into(),
                name: "flask-sqlalchemy".into()
            }
        );
        assert_eq!(
            parse_pip_line("--index-url  https://i.example/simple").unwrap(),
            PipLine::IndexUrl("https://i.example/simple".into())
        );
        assert_eq!(
            parse_pip_line("-i https://i.example/simple").unwrap(),
            PipLine::IndexUrl("https://i.example/simple".into())
        );
        assert_eq!(
            parse_pip_line("--extra-index-url=https://x/simple").unwrap(),
            PipLine::ExtraIndexUrl("https://x/simple".into())
        );
    }

    #[test]
    fn what_is_refused_says_why() {
        for (bad, why) in [
            ("-e ./pkg", "editable"),
            ("--editable=git+https://x/y", "editable"),
            ("./pkg", "local paths"),
            ("/srv/pkg.whl", "local paths"),
            ("file:///srv/pkg.whl", "local paths"),
            ("git+https://github.com/x/y", "VCS"),
            ("pkg @ https://x/pkg.whl", "direct URL"),
            ("--find-links /srv", "only options"),
            ("--index-url", "only options"),
            ("--index-url file:///srv/simple", "not an http(s) index"),
            (
                "--index-url https://user:pw@i.example/simple",
                "credentials",
            ),
            ("-pkg", "only options"),
            ("flask and more", "unexpected"),
            ("", "empty"),
        ] {
            let e = parse_pip_line(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn index_keys_compare_loosely() {
        assert_eq!(
            index_key("HTTPS://PyPI.org/simple/"),
            index_key("https://pypi.org/simple")
        );
        assert_ne!(
            index_key("https://pypi.org/simple"),
            index_key("https://pypi.org/other")
        );
    }
}
