//! Glob patterns as Helm matches them (`.Files.Glob`, `.helmignore`).

/// A `gobwas/glob` pattern (with `/` as separator) as a regex: `*` stays within a path
/// segment, `**` crosses them, `?`, `[…]` and `{a,b}` as usual.
pub fn glob_regex(pat: &str) -> Option<regex::Regex> {
    let mut re = String::from("^");
    let chars: Vec<char> = pat.chars().collect();
    let mut i = 0;
    let mut in_brace = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                re.push_str(".*");
                i += 1;
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => {
                let mut j = i + 1;
                let mut class = String::from("[");
                if chars.get(j) == Some(&'!') {
                    class.push('^');
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    if chars[j] == '\\' || chars[j] == '[' {
                        class.push('\\');
                    }
                    class.push(chars[j]);
                    j += 1;
                }
                class.push(']');
                re.push_str(&class);
                i = j;
            }
            '{' => {
                in_brace += 1;
                re.push_str("(?:");
            }
            '}' if in_brace > 0 => {
                in_brace -= 1;
                re.push(')');
            }
            ',' if in_brace > 0 => re.push('|'),
            '\\' if i + 1 < chars.len() => {
                i += 1;
                re.push_str(&regex::escape(&chars[i].to_string()));
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    re.push('$');
    regex::Regex::new(&re).ok()
}
