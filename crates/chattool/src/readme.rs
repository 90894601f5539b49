//! A template's README as plain text for a tool result: the input capped, front matter removed,
//! Markdown and HTML markup stripped to the readable words (link targets kept in parentheses),
//! the result cut to [`README_MAX_CHARS`] characters. A forgiving line-by-line pass rather than a
//! `CommonMark` parser: delimiter searches and nesting are bounded, so odd input stays cheap.

use std::fmt::Write as _;

/// Most input bytes looked at (64 KiB).
pub const README_INPUT_CAP: usize = 64 * 1024;
/// Most characters of the returned README text.
pub const README_MAX_CHARS: usize = 8000;

/// How far (in characters) a closing delimiter is looked for.
const MAX_SPAN: usize = 2048;
/// How deeply link texts and emphasis are unwrapped.
const MAX_DEPTH: usize = 8;
/// The HTML entities decoded, and what they decode to.
const ENTITIES: [&str; 7] = [
    "&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&apos;", "&nbsp;",
];
/// What each of [`ENTITIES`] decodes to.
const DECODED: [char; 7] = ['&', '<', '>', '"', '\'', '\'', ' '];

/// Cuts `text` to at most `max` characters (Unicode scalar values): if longer, its first
/// `max - 1` characters followed by `…`. Otherwise unchanged.
#[must_use]
pub fn cut_chars(text: &str, max: usize) -> String {
    if text.chars().nth(max).is_none() {
        return text.to_owned();
    }
    let kept = text.chars().take(max.saturating_sub(1));
    kept.chain((max > 0).then_some('…')).collect()
}

/// The README as plain text: input capped at [`README_INPUT_CAP`] bytes (cut back to a UTF-8
/// char boundary), a leading front-matter block (first line `---`, up to the next line that is
/// `---`) removed, Markdown/HTML markup stripped, trimmed, then cut to [`README_MAX_CHARS`]
/// characters by [`cut_chars`].
#[must_use]
pub fn readme_text(markdown: &str) -> String {
    let capped = &markdown[..markdown.floor_char_boundary(README_INPUT_CAP)];
    let body = strip_comments(strip_front_matter(capped));
    let (mut out, mut fence, mut prev_blank) = (String::new(), None, false);
    for line in body.lines().map(str::trim_end) {
        let text = match fence {
            Some((ch, n)) if line.trim().len() >= n && line.trim().chars().all(|c| c == ch) => {
                fence = None;
                continue;
            }
            Some(_) => line.to_owned(),
            None => match block_line(line, &mut fence) {
                Some(text) => text.trim_end().to_owned(),
                None => continue,
            },
        };
        if !(text.is_empty() && prev_blank) {
            prev_blank = text.is_empty();
            out.push_str(&text);
            out.push('\n');
        }
    }
    cut_chars(out.trim(), README_MAX_CHARS)
}

/// `text` without a leading `---` … `---` block; unchanged if the block is not closed.
fn strip_front_matter(text: &str) -> &str {
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        offset += line.len();
        match (index, line.trim_end() == "---") {
            (0, false) => return text,
            (1.., true) => return &text[offset..],
            _ => {}
        }
    }
    text
}

/// `text` without its closed `<!-- ... -->` comments.
fn strip_comments(text: &str) -> String {
    let (mut out, mut rest) = (String::with_capacity(text.len()), text);
    while let Some(start) = rest.find("<!--")
        && let Some(len) = rest[start + 4..].find("-->")
    {
        out.push_str(&rest[..start]);
        rest = &rest[start + len + 7..];
    }
    out + rest
}

/// One line outside a code block as plain text, or `None` if it is dropped: a fence (which
/// opens `fence`), a rule or setext underline, a table separator or a reference definition.
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
    let separator = compact.contains('|') && compact.contains('-');
    let separator = separator && compact.chars().all(|c| matches!(c, '|' | '-' | ':'));
    let definition = t.strip_prefix('[').is_some_and(|rest| {
        let end = rest.find("]:").unwrap_or(0);
        end > 0 && !rest.starts_with('^') && !rest[..end].contains('[')
    });
    if rule || separator || definition {
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

/// A heading's or list item's normalised prefix (`- `, `1. `, none) and the rest of the line.
fn block_prefix(t: &str) -> (String, &str) {
    let hashes = t.chars().take_while(|&c| c == '#').count();
    let rest = &t[hashes..];
    if (1..=6).contains(&hashes) && (rest.is_empty() || rest.starts_with([' ', '\t'])) {
        let closed = rest.trim().trim_end_matches('#');
        let closed_ok = closed.is_empty() || closed.ends_with([' ', '\t']);
        return (String::new(), if closed_ok { closed } else { rest }.trim());
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
    let (chars, mut out): (Vec<char>, _) = (text.chars().collect(), String::new());
    push_inline(&chars, 0, &mut out);
    out
}

/// Pushes `c` with its inline markup stripped; `depth` bounds the recursion.
fn push_inline(c: &[char], depth: usize, out: &mut String) {
    let mut i = 0;
    while let Some(&ch) = c.get(i) {
        let next = c.get(i + 1).copied();
        let deeper = depth < MAX_DEPTH;
        let at = |name: &&str| {
            c.get(i..i + name.len())
                .is_some_and(|s| s.iter().copied().eq(name.chars()))
        };
        let consumed = match ch {
            '\\' => next.filter(char::is_ascii_punctuation).map(|n| {
                out.push(n);
                i + 2
            }),
            '[' if deeper => link(c, i, depth, out, false),
            '!' if deeper && next == Some('[') => link(c, i + 1, depth, out, true),
            '<' => angle(c, i, out),
            '&' => ENTITIES.iter().position(at).map(|e| {
                out.push(DECODED[e]);
                i + ENTITIES[e].len()
            }),
            '`' | '*' | '_' | '~' => Some(span(c, i, depth, out)),
            _ => None,
        };
        i = consumed.unwrap_or_else(|| {
            out.push(ch);
            i + 1
        });
    }
}

/// How many `ch` start at `c[i]`.
fn run(c: &[char], i: usize, ch: char) -> usize {
    c.get(i..)
        .map_or(0, |s| s.iter().take_while(|&&x| x == ch).count())
}

/// A code span (its content) or emphasis (`*`, `**`, `_`, `__`, `~~`; unwrapped) at `c[i]`
/// when it has a closing run; otherwise the run stays. `_` inside a word (`snake_case`) stays.
fn span(c: &[char], i: usize, depth: usize, out: &mut String) -> usize {
    let (ch, n) = (c[i], run(c, i, c[i]));
    let code = ch == '`';
    let word = |at: usize| c.get(at).is_some_and(|x| x.is_alphanumeric());
    let opens = code
        || ((if ch == '~' { n == 2 } else { n <= 3 })
            && depth < MAX_DEPTH
            && c.get(i + n).is_some_and(|x| !x.is_whitespace())
            && !(ch == '_' && i > 0 && word(i - 1)));
    let closes = |at: usize| code || !(c[at - 1].is_whitespace() || ch == '_' && word(at + n));
    let mut at = i + n;
    while opens && at < c.len().min(i + n + MAX_SPAN) {
        let len = run(c, at, ch);
        if len == n && closes(at) {
            if code {
                out.push_str(c[i + n..at].iter().collect::<String>().trim());
            } else {
                push_inline(&c[i + n..at], depth + 1, out);
            }
            return at + n;
        }
        at += len.max(1);
    }
    out.extend(&c[i..i + n]);
    i + n
}

/// Index of the `close` matching an already-open `open`, looked for from `from`.
fn find_close(c: &[char], from: usize, open: char, close: char) -> Option<usize> {
    let (mut depth, mut k) = (0usize, from);
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

/// A link (`[text](url)` as `text (url)`, `[text][ref]` as `text`) or image (its alt text)
/// whose `[` is at `c[i]`; `None` if it is not one.
fn link(c: &[char], i: usize, depth: usize, out: &mut String, image: bool) -> Option<usize> {
    let close = find_close(c, i + 1, '[', ']')?;
    let (end, target) = match c.get(close + 1) {
        Some('(') => find_close(c, close + 2, '(', ')').map(|end| (end, &c[close + 2..end]))?,
        Some('[') => (find_close(c, close + 2, '[', ']')?, &[][..]),
        _ => return None,
    };
    let target: String = target.iter().collect();
    let url = target.split_whitespace().next().unwrap_or_default();
    let url = url.trim_start_matches('<').trim_end_matches('>');
    let mut text = String::new();
    push_inline(&c[i + 1..close], depth + 1, &mut text);
    if image || url.is_empty() || url == text {
        out.push_str(&text);
    } else if text.is_empty() {
        out.push_str(url);
    } else {
        let _ = write!(out, "{text} ({url})");
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
    let autolink = inner.starts_with("http") || inner.starts_with("mailto:");
    if autolink && !inner.contains(char::is_whitespace) {
        out.push_str(&inner);
    }
    Some(end + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(markdown: &str, want: &str) {
        assert_eq!(readme_text(markdown), want, "input: {markdown:?}");
    }

    #[test]
    fn front_matter_is_removed_only_when_closed() {
        check("---\ntitle: x\ntags: [a]\n---\n# Hi\n", "Hi");
        check("---\r\ntitle: x\r\n---\r\nbody", "body");
        check("---\nkey: v", "key: v");
        check("intro\n---\nnot: front", "intro\nnot: front");
    }

    #[test]
    fn html_comments_tags_and_entities() {
        check("<!-- x -->a<!--\nm\n-->b <!-- open", "ab <!-- open");
        check("<p align=\"c\"><b>Bold</b> text</p>", "Bold text");
        check("&amp; &lt;c&gt; &quot;&#39;&nbsp;", "& <c> \"'");
        check("1 < 2 <3 &copy; &", "1 < 2 <3 &copy; &");
    }

    #[test]
    fn headings_setext_and_rules() {
        check("# One\n## Two ##\n###### 6", "One\nTwo\n6");
        check("####### Seven\n#tag", "####### Seven\n#tag");
        check("T\n===\nS\n---\n\n***\n___\n- - -\nx", "T\nS\n\nx");
    }

    #[test]
    fn emphasis_is_removed_but_snake_case_kept() {
        check("**b** *i* _e_ __s__ ~~g~~ ***x***", "b i e s g x");
        check("snake_case_x _y 2 * 3 a*b", "snake_case_x _y 2 * 3 a*b");
        check("**[link](u)** and *`code`*", "link (u) and code");
    }

    #[test]
    fn inline_code_and_fences() {
        check("`x::y` ``a`b`` `<T>` `open", "x::y a`b <T> `open");
        check("```rust x\nlet a = *b*; // <T>\n```", "let a = *b*; // <T>");
        check("~~~\n[k](v)\n\n````\n~~~", "[k](v)\n\n````");
    }

    #[test]
    fn links_images_references_and_autolinks() {
        check("[text](https://a.b \"t\")", "text (https://a.b)");
        check("![alt](i.png) [ref][r] [s][] [u](u)", "alt ref s u");
        check("<https://x.y> [![CI](b.svg)](c)", "https://x.y CI (c)");
        check("[\\[x\\]](<u>) [shortcut]", "[x] (u) [shortcut]");
        check("a\n[r]: https://r\n[^1]: note", "a\n[^1]: note");
    }

    #[test]
    fn blockquotes_lists_and_tables() {
        check("> quoted\n> > deeper", "quoted\ndeeper");
        check("* one\n+ two\n  - nest", "- one\n- two\n  - nest");
        check("3. x\n12) y\n- [ ] t\n-no", "3. x\n12. y\n- [ ] t\n-no");
        check("| a | b |\n|---|:-:|\n| `c` | **d** |", "a | b\nc | d");
        check("x|y\n--|--\n1|2", "x|y\n1|2");
    }

    #[test]
    fn blank_lines_collapse_and_trailing_spaces_go() {
        check("\n\na  \n\n\n\n<br>\n\nb  \n\n", "a\n\nb");
    }

    #[test]
    fn cut_chars_counts_chars_not_bytes() {
        assert_eq!(cut_chars("abc", 3), "abc");
        assert_eq!(cut_chars("abcd", 3), "ab…");
        assert_eq!(cut_chars("ééé", 3), "ééé");
        assert_eq!(cut_chars("éééé", 2), "é…");
        assert_eq!(cut_chars("a", 0), "");
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
        let spaces = " ".repeat(README_INPUT_CAP - 1);
        check(&format!("{spaces}éafter"), "");
        check(&format!("{}éafter", &spaces[1..]), "é");
    }

    #[test]
    fn odd_input_never_panics() {
        let odd = "[ ] ` `` ``` ~~~ --- ![ ![a] [a]( [a][ <a <!-- <!--> --> & &amp * **a _ __ ~~ ~ \\ \
                   | || # > 1. [^1]: []: é*é_é \r\n \t \0 [[]]() [a]((b) <https:// <a\u{20}'>'> é`é";
        let odd: Vec<&str> = odd.split(' ').chain(["", "---\n", "- ", "1. "]).collect();
        for a in &odd {
            for b in &odd {
                let text = readme_text(&format!("{a}{b}\n{b}{a}"));
                assert!(text.chars().count() <= README_MAX_CHARS);
            }
        }
        for unit in [
            "[", "]", "*", "_", "`", "<", "[a](", "**a", "![", "~~", "*a",
        ] {
            assert!(readme_text(&unit.repeat(30_000)).chars().count() <= README_MAX_CHARS);
        }
        let _ = readme_text(&format!("{}x{}(u)", "[".repeat(3000), "]".repeat(3000)));
        let _ = readme_text(&format!("{}x{}", "*_".repeat(3000), "_*".repeat(3000)));
    }
}
