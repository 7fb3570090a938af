//! `${VAR}` expansion from the environment.

/// Why a value could not be expanded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ExpandError {
    /// `${NAME}` with `NAME` unset.
    Missing(String),
    /// `${` without `}`.
    Unclosed,
}

/// Replaces each `${NAME}` (or `${NAME:-default}`) in `text`; `$$` is a literal `$`.
/// Fails on the first variable that is unset and has no default.
pub(crate) fn expand(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or(ExpandError::Unclosed)?;
            let spec = &body[..end];
            let (name, default) = match spec.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (spec, None),
            };
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(ExpandError::Missing(name.to_string())),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn env(name: &str) -> Option<String> {
        (name == "PW").then(|| "s3cret".to_string())
    }

    #[test]
    fn expands_set_variables_and_defaults() {
        assert_eq!(expand("a:${PW}@h", &env).unwrap(), "a:s3cret@h");
        assert_eq!(expand("${NOPE:-x}", &env).unwrap(), "x");
        assert_eq!(expand("cost $$5 $x", &env).unwrap(), "cost $5 $x");
    }

    #[test]
    fn missing_variable_is_named() {
        assert_eq!(
            expand("${PW}${MISSING}", &env).unwrap_err(),
            super::ExpandError::Missing("MISSING".into())
        );
        assert_eq!(
            expand("${PW", &env).unwrap_err(),
            super::ExpandError::Unclosed
        );
    }
}
