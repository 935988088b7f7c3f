//! `WWW-Authenticate` challenges (RFC 7235), as registries send them:
//! `Basic realm="..."` or `Bearer realm="...",service="...",scope="..."`.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// The challenges of one header value, in order; schemes kiln cannot answer are skipped.
pub fn parse(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    for (scheme, params) in split_challenges(header) {
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => out.push(Challenge::Basic),
            "bearer" => {
                // Only a URL can be asked for a token.
                let realm = params
                    .get("realm")
                    .filter(|r| r.starts_with("https://") || r.starts_with("http://"));
                if let Some(realm) = realm {
                    out.push(Challenge::Bearer {
                        realm: realm.clone(),
                        service: params.get("service").cloned(),
                        scope: params.get("scope").cloned(),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Splits `Scheme k=v, k="v", Other k=v` into schemes with their parameters.
fn split_challenges(header: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    let chars: Vec<char> = header.chars().collect();
    let mut i = 0;
    let skip = |i: &mut usize, pred: &dyn Fn(char) -> bool| {
        while *i < chars.len() && pred(chars[*i]) {
            *i += 1;
        }
    };
    while i < chars.len() {
        skip(&mut i, &|c| c == ' ' || c == ',' || c == '\t');
        let start = i;
        skip(&mut i, &|c| is_token_char(c));
        if i == start {
            // Not a token: skip one character so that garbage cannot loop forever.
            i += 1;
            continue;
        }
        let word: String = chars[start..i].iter().collect();
        let mut j = i;
        skip(&mut j, &|c| c == ' ' || c == '\t');
        if j < chars.len() && chars[j] == '=' {
            // A parameter of the current challenge.
            j += 1;
            skip(&mut j, &|c| c == ' ' || c == '\t');
            let mut value = String::new();
            let mut complete = true;
            if j < chars.len() && chars[j] == '"' {
                j += 1;
                complete = false;
                while j < chars.len() {
                    match chars[j] {
                        '"' => {
                            complete = true;
                            break;
                        }
                        '\\' if j + 1 < chars.len() => {
                            j += 1;
                            value.push(chars[j]);
                        }
                        '\\' => break,
                        c => value.push(c),
                    }
                    j += 1;
                }
                j += 1; // past the closing quote
            } else {
                let vs = j;
                skip(&mut j, &|c| c != ',' && c != ' ' && c != '\t');
                value = chars[vs..j].iter().collect();
            }
            // An unterminated quoted string is not a value.
            if let (true, Some((_, params))) = (complete, out.last_mut()) {
                params.insert(word.to_ascii_lowercase(), value);
            }
            i = j;
        } else {
            out.push((word, BTreeMap::new()));
        }
    }
    out
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_distribution_and_hub_challenges() {
        assert_eq!(
            parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            vec![Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            }]
        );
        assert_eq!(
            parse(r#"Basic realm="Registry Realm""#),
            vec![Challenge::Basic]
        );
        assert_eq!(parse("basic"), vec![Challenge::Basic]);
    }

    #[test]
    fn scopes_with_commas_and_several_challenges() {
        let got = parse(
            r#"Negotiate, Bearer realm="http://h/token",scope="repository:a/b:pull,push", Basic realm=x"#,
        );
        assert_eq!(
            got,
            vec![
                Challenge::Bearer {
                    realm: "http://h/token".into(),
                    service: None,
                    scope: Some("repository:a/b:pull,push".into()),
                },
                Challenge::Basic,
            ]
        );
    }

    #[test]
    fn garbage_yields_nothing_and_never_panics() {
        for s in [
            "",
            "=",
            "\"",
            "Bearer",
            "Bearer realm",
            "Bearer realm=\"",
            "Bearer realm=\"\\",
            ",,,==\"\"",
            "Bearer scope=x",
        ] {
            let got = parse(s);
            assert!(got.is_empty(), "{s:?} -> {got:?}");
        }
    }
}
