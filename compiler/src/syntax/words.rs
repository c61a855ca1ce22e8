//! pest's parse errors in words: "expected a field name or `}`, found `=`".
//! Rule names never reach the user.

use pest::error::{ErrorVariant, InputLocation};

use super::parse::Rule;
use crate::diagnostic::Error;
use crate::source::Span;

const ITEM: &str = "an item (`use`, `let`, `model`, `data` or `stage`)";

/// What a rule stands for, in words.
fn describe(rule: Rule) -> &'static str {
    match rule {
        Rule::EOI | Rule::file => ITEM,
        Rule::expr_only => "an expression",
        Rule::field_name => "a field name",
        Rule::ident => "a name",
        Rule::number => "a number",
        Rule::string => "a string",
        Rule::boolean => "`true` or `false`",
        Rule::std_path | Rule::module_path => "a module (`std::pe` or a \"file.pex\" path)",
        Rule::import => "a name to import",
        Rule::colon => "`:`",
        Rule::path_sep => "`::`",
        Rule::comma => "`,`",
        Rule::equals => "`=`",
        Rule::dot => "`.`",
        Rule::lbrace => "`{`",
        Rule::rbrace => "`}`",
        Rule::lparen => "`(`",
        Rule::rparen => "`)`",
        Rule::lbracket => "`[`",
        Rule::rbracket => "`]`",
        Rule::kw_use => "`use`",
        Rule::kw_let => "`let`",
        Rule::kw_model => "`model`",
        Rule::kw_data => "`data`",
        Rule::kw_stage => "`stage`",
        Rule::kw_phase => "`phase`",
        Rule::kw_teacher => "`teacher`",
        Rule::kw_export => "`export`",
        Rule::kw_with => "`with`",
        Rule::kw_as => "`as`",
        Rule::add | Rule::sub | Rule::mul | Rule::div => "an operator",
        Rule::neg => "`-`",
        Rule::member => "`.`",
        Rule::with_update => "`with`",
        Rule::field => "a field",
        Rule::phase_decl => "`phase`",
        Rule::teacher_decl => "`teacher`",
        Rule::export_decl => "`export`",
        Rule::use_decl | Rule::let_decl | Rule::model_decl | Rule::data_decl | Rule::stage_decl => {
            "an item"
        }
        Rule::named_arg => "an argument",
        Rule::record_field => "a field name",
        _ => "an expression",
    }
}

/// Rules that start an expression: reported together as "an expression".
fn starts_expression(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::callee
            | Rule::number
            | Rule::string
            | Rule::boolean
            | Rule::name_or_call
            | Rule::list
            | Rule::tuple_or_paren
            | Rule::record
            | Rule::lbracket
            | Rule::lparen
            | Rule::lbrace
            | Rule::neg
            | Rule::expr
    )
}

fn starts_item(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::kw_use | Rule::kw_let | Rule::kw_model | Rule::kw_data | Rule::kw_stage
    )
}

/// "a, b or c"
pub fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The token at `pos`, for "found ...": a word, a number, a character, or the end of file.
fn found_at(text: &str, pos: usize) -> (String, Span) {
    let rest = &text[pos.min(text.len())..];
    let Some(first) = rest.chars().next() else {
        // Point at the last character of the file: a label past the end cannot be drawn.
        let trimmed = text.trim_end();
        let last = trimmed.chars().next_back().map_or(0, char::len_utf8);
        return (
            "the end of the file".into(),
            Span::new(trimmed.len() - last, trimmed.len()),
        );
    };
    let len = if first.is_ascii_alphanumeric() || first == '_' {
        rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len())
    } else if first == '"' {
        rest[1..]
            .find(['"', '\n'])
            .map_or(rest.len(), |i| i + 2)
            .min(rest.len())
    } else {
        first.len_utf8()
    };
    let token = &rest[..len];
    let shown = if first == '\n' || first == '\r' {
        "the end of the line".to_string()
    } else {
        format!("`{token}`")
    };
    (shown, Span::new(pos, pos + len))
}

/// The end of the line when a string starting at `pos` is not closed on it.
fn unterminated_string(text: &str, pos: usize) -> Option<usize> {
    let rest = text.get(pos..)?.strip_prefix('"')?;
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match c {
            '\n' => return Some(pos + 1 + i),
            '"' if !escaped => return None,
            '\\' => escaped = !escaped,
            _ => escaped = false,
        }
    }
    Some(text.len())
}

/// Converts a pest error into our diagnostic.
pub fn syntax_error(text: &str, error: pest::error::Error<Rule>) -> Error {
    let pos = match error.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let (found, span) = found_at(text, pos);
    if let Some(line_end) = unterminated_string(text, pos) {
        return Error::Syntax {
            message: "unterminated string".into(),
            label: "this string has no closing `\"` on its line".into(),
            span: Span::new(pos, line_end).into(),
            help: Some("close the string with `\"`; strings cannot span lines (use `\\n`)".into()),
        };
    }
    let (expected, help) = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => expected_words(positives),
        ErrorVariant::CustomError { message } => (message.clone(), None),
    };
    let expected = if expected.is_empty() {
        "something else".to_string()
    } else {
        expected
    };
    let before = text[..pos.min(text.len())].trim_end();
    if found == "`{`" && before.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        return Error::Syntax {
            message: "a name followed by `{` is not a call".into(),
            label: "expected `(` or `with` before this".into(),
            span: span.into(),
            help: Some(
                "call a constructor with parentheses, `vit(patch: 16, ..)`; \
                 update a value with `with`, `tiny with { depth: 12 }`"
                    .into(),
            ),
        };
    }
    let starts_with_digit = text[pos.min(text.len())..].starts_with(|c: char| c.is_ascii_digit());
    let help = help.or_else(|| {
        (starts_with_digit && expected.contains("an expression")).then(|| {
            "numbers: `2_000`, `2e-3`, `0.5`, `1/16`, with suffixes K, M, B, T \
             (powers of 1000) or Ki, Mi, Gi (powers of 1024)"
                .to_string()
        })
    });
    Error::Syntax {
        message: format!("expected {expected}, found {found}"),
        label: format!("expected {expected}"),
        span: span.into(),
        help,
    }
}

fn expected_words(positives: &[Rule]) -> (String, Option<String>) {
    let mut words: Vec<String> = Vec::new();
    let mut push = |w: &str| {
        if !words.iter().any(|x| x == w) {
            words.push(w.to_string());
        }
    };
    let expression = positives.iter().any(|&r| starts_expression(r));
    let items = positives.iter().filter(|&&r| starts_item(r)).count() >= 2;
    let mut help = None;
    if items {
        push("an item (`use`, `let`, `model`, `data` or `stage`)");
    }
    if expression {
        push("an expression");
    }
    let mut rest: Vec<Rule> = positives
        .iter()
        .copied()
        .filter(|&r| !((expression && starts_expression(r)) || (items && starts_item(r))))
        .collect();
    // Closing punctuation first, operators and postfix forms last.
    rest.sort_by_key(|&r| match r {
        Rule::rbrace | Rule::rparen | Rule::rbracket | Rule::comma | Rule::colon | Rule::equals => {
            0
        }
        Rule::add
        | Rule::sub
        | Rule::mul
        | Rule::div
        | Rule::member
        | Rule::dot
        | Rule::with_update
        | Rule::kw_with => 3,
        Rule::kw_phase | Rule::kw_teacher | Rule::kw_export | Rule::kw_as => 2,
        _ => 1,
    });
    for rule in rest {
        push(describe(rule));
    }
    if positives.contains(&Rule::field_name) && positives.contains(&Rule::rbrace) {
        help = Some(
            "stage and phase blocks hold `name: value` fields; a record is `{k: v, ..}`".into(),
        );
    }
    if items && !expression {
        help = Some("a file holds `use`, `let`, `model`, `data` and `stage` items".into());
    }
    (join_or(&words), help)
}
