//! A template's README as plain text for a tool result: the input is capped, a front-matter
//! block is removed, Markdown and HTML markup is stripped down to the readable words (link
//! targets kept in parentheses), and the result is cut to [`README_MAX_CHARS`] characters.
//!
//! This is a forgiving line-by-line pass, not a full CommonMark parser: every search for a
//! closing delimiter is bounded, and so is the nesting, so odd input costs little and never
//! panics.

/// Most input bytes looked at (64 KiB).
pub const README_INPUT_CAP: usize = 64 * 1024;
/// Most characters of the returned README text.
pub const README_MAX_CHARS: usize = 8000;

/// How far (in characters) a closing delimiter is looked for.
const MAX_SPAN: usize = 2048;
/// How deeply link texts and emphasis are unwrapped.
const MAX_DEPTH: usize = 8;
/// The HTML entities decoded.
const ENTITIES: [(&str, char); 7] = [
    ("&amp;", '&'),
    ("&lt;", '<'),
    ("&gt;", '>'),
    ("&quot;", '"'),
    ("&#39;", '\''),
    ("&apos;", '\''),
    ("&nbsp;", ' '),
];

/// Cuts `text` to at most `max` characters (Unicode scalar values): if longer, its first
/// `max - 1` characters followed by `…`. Otherwise unchanged.
pub fn cut_chars(text: &str, max: usize) -> String {
    if text.chars().nth(max).is_none() {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    if max > 0 {
        out.push('…');
    }
    out
}

/// The README as plain text: input capped at [`README_INPUT_CAP`] bytes (cut back to a UTF-8
/// char boundary), a leading front-matter block (first line `---`, up to the next line that is
/// `---`) removed, Markdown/HTML markup stripped, trimmed, then
/// [`cut_chars`]`(.., `[`README_MAX_CHARS`]`)`.
pub fn readme_text(markdown: &str) -> String {
    let body = strip_comments(strip_front_matter(cap_bytes(markdown, README_INPUT_CAP)));
    let mut out = String::new();
    let mut fence: Option<(char, usize)> = None;
    let mut prev_blank = false;
    for line in body.lines() {
        let line = line.trim_end();
        let text = if let Some((ch, n)) = fence {
            let t = line.trim();
            if t.len() >= n && t.chars().all(|c| c == ch) {
                fence = None;
                continue;
            }
            line.to_owned()
        } else {
            match block_line(line, &mut fence) {
                Some(text) => text.trim_end().to_owned(),
                None => continue,
            }
        };
        if text.is_empty() && prev_blank {
            continue;
        }
        prev_blank = text.is_empty();
        out.push_str(&text);
        out.push('\n');
    }
    cut_chars(out.trim(), README_MAX_CHARS)
}

/// `text` cut to at most `cap` bytes, backing off to a char boundary.
fn cap_bytes(text: &str, cap: usize) -> &str {
    let mut end = text.len().min(cap);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text` without a leading `---` … `---` block; unchanged if the block is not closed.
fn strip_front_matter(text: &str) -> &str {
    let mut lines = text.split_inclusive('\n');
    let Some(first) = lines.next().filter(|l| l.trim_end() == "---") else {
        return text;
    };
    let mut offset = first.len();
    for line in lines {
        offset += line.len();
        if line.trim_end() == "---" {
            return &text[offset..];
        }
    }
    text
}

/// `text` without its closed `<!-- ... -->` comments.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<!--") {
        let Some(len) = rest[start + 4..].find("-->") else {
            break;
        };
        out.push_str(&rest[..start]);
        rest = &rest[start + 4 + len + 3..];
    }
    out.push_str(rest);
    out
}

/// One line outside a code block as plain text, or `None` if it is dropped (a fence, which
/// then opens `fence`; a rule or setext underline; a table separator; a reference definition).
fn block_line(line: &str, fence: &mut Option<(char, usize)>) -> Option<String> {
    let indent = &line[..line.len() - line.trim_start().len()];
    let mut t = line.trim_start();
    while let Some(rest) = t.strip_prefix('>') {
        t = rest.trim_start();
    }
    for ch in ['`', '~'] {
        let n = t.chars().take_while(|&c| c == ch).count();
        if n >= 3 && !(ch == '`' && t[n..].contains('`')) {
            *fence = Some((ch, n));
            return None;
        }
    }
    let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
    let all = |ch: char| !compact.is_empty() && compact.chars().all(|c| c == ch);
    let rule = all('=') || all('-') || (compact.len() >= 3 && (all('*') || all('_')));
    let separator = compact.contains('|')
        && compact.contains('-')
        && compact.chars().all(|c| matches!(c, '|' | '-' | ':'));
    if rule || separator || is_reference_definition(t) {
        return None;
    }
    if let Some(row) = t.strip_prefix('|') {
        let row = row.strip_suffix('|').unwrap_or(row);
        let cells: Vec<String> = row.split('|').map(|cell| inline(cell.trim())).collect();
        return Some(format!("{indent}{}", cells.join(" | ")));
    }
    let (prefix, body) = block_prefix(t);
    Some(format!("{indent}{prefix}{}", inline(body)))
}

/// Whether `t` is a link reference definition such as `[ref]: https://x` (not a footnote).
fn is_reference_definition(t: &str) -> bool {
    t.strip_prefix('[').is_some_and(|rest| {
        rest.find("]:")
            .is_some_and(|end| end > 0 && !rest.starts_with('^') && !rest[..end].contains('['))
    })
}

/// A heading's or list item's normalised prefix and the rest of the line.
fn block_prefix(t: &str) -> (String, &str) {
    let hashes = t.chars().take_while(|&c| c == '#').count();
    let rest = &t[hashes..];
    if (1..=6).contains(&hashes) && (rest.is_empty() || rest.starts_with([' ', '\t'])) {
        let rest = rest.trim();
        let closed = rest.trim_end_matches('#');
        let closed_ok = closed.is_empty() || closed.ends_with([' ', '\t']);
        return (String::new(), if closed_ok { closed.trim_end() } else { rest });
    }
    if let Some(rest) = t.strip_prefix(['-', '*', '+'])
        && rest.starts_with([' ', '\t'])
    {
        return ("- ".to_owned(), rest.trim_start());
    }
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    if let Some(rest) = t[digits..].strip_prefix(['.', ')'])
        && (1..=9).contains(&digits)
        && rest.starts_with([' ', '\t'])
    {
        return (format!("{}. ", &t[..digits]), rest.trim_start());
    }
    (String::new(), t)
}

/// `text` with its inline markup stripped.
fn inline(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    push_inline(&chars, 0, &mut out);
    out
}

/// Pushes `c` with its inline markup stripped; `depth` bounds the recursion.
fn push_inline(c: &[char], depth: usize, out: &mut String) {
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        let consumed = match ch {
            '\\' => next.filter(char::is_ascii_punctuation).map(|n| {
                out.push(n);
                i + 2
            }),
            '`' => Some(code_span(c, i, out)),
            '[' if depth < MAX_DEPTH => link(c, i, depth, out, false),
            '!' if depth < MAX_DEPTH && next == Some('[') => link(c, i + 1, depth, out, true),
            '<' => angle(c, i, out),
            '&' => entity(c, i, out),
            '*' | '_' | '~' => Some(emphasis(c, i, depth, out)),
            _ => None,
        };
        if let Some(j) = consumed {
            i = j;
        } else {
            out.push(ch);
            i += 1;
        }
    }
}

/// How many `ch` start at `c[i]`.
fn run(c: &[char], i: usize, ch: char) -> usize {
    c.get(i..).map_or(0, |s| s.iter().take_while(|&&x| x == ch).count())
}

/// Index of the `close` matching an already-open `open`, looked for from `from`.
fn find_close(c: &[char], from: usize, open: char, close: char) -> Option<usize> {
    let mut depth = 0usize;
    let mut k = from;
    while k < c.len().min(from + MAX_SPAN) {
        match c[k] {
            '\\' => k += 1,
            x if x == close && depth == 0 => return Some(k),
            x if x == close => depth -= 1,
            x if x == open => depth += 1,
            _ => {}
        }
        k += 1;
    }
    None
}

/// A code span at `c[i]` as its content; an unclosed backtick run stays as it is.
fn code_span(c: &[char], i: usize, out: &mut String) -> usize {
    let n = run(c, i, '`');
    let mut k = i + n;
    while k < c.len().min(i + n + MAX_SPAN) {
        let m = run(c, k, '`');
        if m == n {
            out.push_str(c[i + n..k].iter().collect::<String>().trim());
            return k + m;
        }
        k += m.max(1);
    }
    out.extend(&c[i..i + n]);
    i + n
}

/// A link (`[text](url)` as `text (url)`, `[text][ref]` as `text`) or image (its alt text)
/// whose `[` is at `c[i]`; `None` if it is not one.
fn link(c: &[char], i: usize, depth: usize, out: &mut String, image: bool) -> Option<usize> {
    let close = find_close(c, i + 1, '[', ']')?;
    let (end, url) = match c.get(close + 1) {
        Some('(') => {
            let end = find_close(c, close + 2, '(', ')')?;
            let target: String = c[close + 2..end].iter().collect();
            let url = target.split_whitespace().next().unwrap_or_default();
            (end, url.trim_start_matches('<').trim_end_matches('>').to_owned())
        }
        Some('[') => (find_close(c, close + 2, '[', ']')?, String::new()),
        _ => return None,
    };
    let mut text = String::new();
    push_inline(&c[i + 1..close], depth + 1, &mut text);
    if image || url.is_empty() || url == text {
        out.push_str(&text);
    } else if text.is_empty() {
        out.push_str(&url);
    } else {
        out.push_str(&format!("{text} ({url})"));
    }
    Some(end + 1)
}

/// An autolink at `c[i]` as its URL, or an HTML tag dropped; `None` if it is neither.
fn angle(c: &[char], i: usize, out: &mut String) -> Option<usize> {
    let first = *c.get(i + 1)?;
    if !(first.is_ascii_alphabetic() || first == '/' || first == '!') {
        return None;
    }
    let end = (i + 1..c.len().min(i + MAX_SPAN)).find(|&k| c[k] == '>')?;
    let inner: String = c[i + 1..end].iter().collect();
    let scheme = ["http://", "https://", "mailto:"].iter().any(|p| inner.starts_with(p));
    if scheme && !inner.contains(char::is_whitespace) {
        out.push_str(&inner);
        return Some(end + 1);
    }
    let name = inner.strip_prefix('/').unwrap_or(&inner);
    let name_end = name
        .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-'))
        .unwrap_or(name.len());
    let after = name[name_end..].chars().next();
    let tag = inner.starts_with('!')
        || (name.starts_with(|ch: char| ch.is_ascii_alphabetic())
            && after.is_none_or(|ch| ch.is_whitespace() || ch == '/'));
    tag.then_some(end + 1)
}

/// A known HTML entity at `c[i]` decoded; `None` if there is none.
fn entity(c: &[char], i: usize, out: &mut String) -> Option<usize> {
    let (name, ch) = ENTITIES.iter().find(|(name, _)| {
        c.get(i..i + name.len()).is_some_and(|s| s.iter().copied().eq(name.chars()))
    })?;
    out.push(*ch);
    Some(i + name.len())
}

/// Emphasis (`*`, `**`, `_`, `__`, `~~`) at `c[i]` unwrapped when it has a closing run;
/// otherwise the run stays. `_` inside a word (snake_case) is never emphasis.
fn emphasis(c: &[char], i: usize, depth: usize, out: &mut String) -> usize {
    let ch = c[i];
    let n = run(c, i, ch);
    let prev = i.checked_sub(1).map(|p| c[p]);
    let opens = (if ch == '~' { n == 2 } else { n <= 3 })
        && depth < MAX_DEPTH
        && c.get(i + n).is_some_and(|x| !x.is_whitespace())
        && !(ch == '_' && prev.is_some_and(char::is_alphanumeric));
    let mut k = i + n;
    while opens && k < c.len().min(i + n + MAX_SPAN) {
        let m = run(c, k, ch);
        let after = c.get(k + m).copied();
        if m == n
            && !c[k - 1].is_whitespace()
            && !(ch == '_' && after.is_some_and(char::is_alphanumeric))
        {
            push_inline(&c[i + n..k], depth + 1, out);
            return k + m;
        }
        k += m.max(1);
    }
    out.extend(&c[i..i + n]);
    i + n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_is_removed_only_when_closed() {
        assert_eq!(readme_text("---\ntitle: x\ntags: [a]\n---\n# Hello\n"), "Hello");
        assert_eq!(readme_text("---\nkey: v"), "key: v");
        assert_eq!(readme_text("intro\n---\nnot: front"), "intro\nnot: front");
    }

    #[test]
    fn html_comments_tags_and_entities() {
        let md = "<!-- hidden -->\n<p align=\"center\"><b>Bold</b> text</p>\n<!--\nmulti\n-->after";
        assert_eq!(readme_text(md), "Bold text\nafter");
        let md = "a &amp; b &lt;c&gt; &quot;d&quot; &#39;e&#39;&nbsp;f 1 < 2 <3 &copy;";
        assert_eq!(readme_text(md), "a & b <c> \"d\" 'e' f 1 < 2 <3 &copy;");
    }

    #[test]
    fn headings_setext_and_rules() {
        let md = "# One\n## Two ##\n###### Six\n####### Seven\n#tag";
        assert_eq!(readme_text(md), "One\nTwo\nSix\n####### Seven\n#tag");
        assert_eq!(readme_text("Title\n=====\nSub\n---\n\n***\n___\n- - -\ntext"), "Title\nSub\n\ntext");
    }

    #[test]
    fn emphasis_is_removed_but_snake_case_kept() {
        let md = "**bold** *it* _em_ __strong__ ~~gone~~ ***both*** snake_case_name _x 2 * 3 a*b";
        assert_eq!(readme_text(md), "bold it em strong gone both snake_case_name _x 2 * 3 a*b");
    }

    #[test]
    fn inline_code_and_fences() {
        let md = "use `x::y` and ``a`b`` here\n```rust title=\"x\"\nlet a = *b*; // <T>\n\n```\n~~~\n[k](v)\n~~~";
        assert_eq!(readme_text(md), "use x::y and a`b here\nlet a = *b*; // <T>\n\n[k](v)");
    }

    #[test]
    fn links_images_references_and_autolinks() {
        let md = "[text](https://a.b \"t\") ![alt](img.png) [ref][r] [same][] <https://x.y> \
                  [![CI](b.svg)](https://ci) [https://u](https://u) [\\[x\\]](u)\n[r]: https://r";
        assert_eq!(
            readme_text(md),
            "text (https://a.b) alt ref same https://x.y CI (https://ci) https://u [x] (u)"
        );
    }

    #[test]
    fn blockquotes_lists_and_tables() {
        let md = "> quoted\n> > deeper\n* one\n+ two\n  - nested\n3. three\n12) twelve\n- [ ] task";
        assert_eq!(
            readme_text(md),
            "quoted\ndeeper\n- one\n- two\n  - nested\n3. three\n12. twelve\n- [ ] task"
        );
        assert_eq!(readme_text("| a | b |\n|---|:---:|\n| `c` | **d** |\nx|y\n--|--"), "a | b\nc | d\nx|y");
    }

    #[test]
    fn blank_lines_collapse_and_trailing_spaces_go() {
        assert_eq!(readme_text("\n\na  \n\n\n\n<br>\n\nb  \n\n"), "a\n\nb");
    }

    #[test]
    fn cut_chars_counts_chars() {
        assert_eq!(cut_chars("abc", 3), "abc");
        assert_eq!(cut_chars("abcd", 3), "ab…");
        assert_eq!(cut_chars("ééé", 3), "ééé");
        assert_eq!(cut_chars("éééé", 2), "é…");
        assert_eq!(cut_chars("a", 0), "");
        assert_eq!(cut_chars("", 0), "");
    }

    #[test]
    fn output_is_cut_at_max_chars() {
        let exact = "é".repeat(README_MAX_CHARS);
        assert_eq!(readme_text(&exact), exact);
        let long = readme_text(&"é".repeat(README_MAX_CHARS + 500));
        assert_eq!(long.chars().count(), README_MAX_CHARS);
        assert_eq!(long, format!("{}…", "é".repeat(README_MAX_CHARS - 1)));
    }

    #[test]
    fn input_is_capped_at_a_char_boundary() {
        assert_eq!(cap_bytes("aé", 2), "a");
        assert_eq!(cap_bytes("aé", 3), "aé");
        let spaces = " ".repeat(README_INPUT_CAP - 1);
        assert_eq!(readme_text(&format!("{spaces}éafter")), "");
        assert_eq!(readme_text(&format!("{}éafter", &spaces[1..])), "é");
    }

    #[test]
    fn odd_input_never_panics() {
        let odd = [
            "", "[", "]", "<", ">", "`", "``", "```", "~~~", "---", "---\n", "![", "![a]", "[a](",
            "[a][", "<a", "<!--", "<!-->", "-->", "&", "&amp", "*", "**a", "_", "__", "~~", "~",
            "\\", "|", "||", "#", "> ", ">", "1.", "1. ", "- ", "[^1]: x", "[]:", "é*é_é",
            "\r\n", "\t", "a\u{0}b", "[[]]()", "[a]((b)", "<https://", "<a href='>'>", "é`é",
        ];
        for a in odd {
            for b in odd {
                let text = readme_text(&format!("{a}{b}\n{b}{a}"));
                assert!(text.chars().count() <= README_MAX_CHARS);
            }
        }
        for unit in ["[", "]", "*", "_", "`", "<", "[a](", "**a", "![", "(", "~~"] {
            let _ = readme_text(&unit.repeat(20_000));
        }
        let _ = readme_text(&format!("{}x{}(u)", "[".repeat(3000), "]".repeat(3000)));
        let _ = readme_text(&format!("{}x{}", "*_".repeat(3000), "_*".repeat(3000)));
    }
}
