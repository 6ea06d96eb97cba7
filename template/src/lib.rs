//! Go templates (`text/template`) as Prometheus expands them in alert labels
//! and annotations: `{{ $labels.instance }}`, `{{ $value | humanize }}`,
//! `{{ printf "%.2f" $value }}`, `{{ if gt $value 80.0 }}…{{ else }}…{{ end }}`,
//! `{{ range query "up" }}{{ .Labels.instance }}{{ end }}`, `{{- trim -}}`.
//!
//! The data is Prometheus's: `.Labels`, `.ExternalLabels`, `.ExternalURL`,
//! `.Value`, with `$labels`, `$externalLabels`, `$externalURL` and `$value`
//! defined before the text. Missing map keys give the empty string
//! (Prometheus's `missingkey=zero`). Templates are parsed when a rule file
//! loads, so an unknown function or a syntax error is refused there, with the
//! rule and field named, and never at the moment an alert fires.
//!
//! This crate knows nothing of rules, alerts or notifications: callers hand
//! it the data (and, for `query`, a function that runs PromQL), and both the
//! rule engine and the notifier use it. [`gofmt`] is Go's number and string
//! formatting (`%g`, `%.2f`, `%q`), which templates' `printf` and
//! notification payloads need to match Prometheus byte for byte.

pub mod gofmt;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use regex::Regex;
use thiserror::Error;

use crate::gofmt::{format_e, format_f, format_g};

/// Longest template source accepted, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;
/// Deepest nesting of `{{if}}`/`{{range}}`/`{{with}}` blocks, and of
/// parentheses in one pipeline: parsing and expansion recurse over it.
pub const MAX_NESTING: usize = 64;
/// Most steps (nodes and range iterations) one expansion may take.
pub const MAX_STEPS: u64 = 1_000_000;
/// Longest output of one expansion, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// Most `query` calls in one expansion.
pub const MAX_QUERIES: u32 = 32;
/// Longest one expansion may take, its queries included.
pub const MAX_EXPANSION_TIME: std::time::Duration = std::time::Duration::from_secs(5);
/// Widest `printf` width or precision (Go's limit).
const MAX_FORMAT_WIDTH: usize = 1_000_000;

/// A template that does not parse or fails to run.
#[derive(Debug, Clone, Error, PartialEq)]
#[error("template: {0}")]
pub struct TemplateError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(msg.into()))
}

/// One result of the `query` function.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySample {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Runs a PromQL query for the `query` function.
pub type QueryFn<'a> = &'a dyn Fn(&str) -> Result<Vec<QuerySample>, String>;

/// What a template sees.
#[derive(Debug, Clone, Default)]
pub struct TemplateData {
    /// The alert's labels (`$labels`).
    pub labels: BTreeMap<String, String>,
    /// External labels (`$externalLabels`).
    pub external_labels: BTreeMap<String, String>,
    /// External URL (`$externalURL`).
    pub external_url: String,
    /// The value of the alert's sample (`$value`).
    pub value: f64,
}

/// A value inside a template.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// `map[string]string`: labels.
    Map(BTreeMap<String, String>),
    /// A struct: the data, or a query sample.
    Struct(BTreeMap<&'static str, V>),
    /// A struct with names known at run time (a notification's data).
    Obj(BTreeMap<String, V>),
    List(Vec<V>),
}

impl V {
    fn truth(&self) -> bool {
        match self {
            V::Nil => false,
            V::Bool(b) => *b,
            V::Int(i) => *i != 0,
            V::Float(f) => *f != 0.0,
            V::Str(s) => !s.is_empty(),
            V::Map(m) => !m.is_empty(),
            V::Struct(_) | V::Obj(_) => true,
            V::List(l) => !l.is_empty(),
        }
    }

    /// `fmt.Sprint` of the value.
    fn print(&self) -> String {
        match self {
            V::Nil => "<nil>".into(),
            V::Bool(b) => b.to_string(),
            V::Int(i) => i.to_string(),
            V::Float(f) => format_g(*f, None),
            V::Str(s) => s.clone(),
            V::Map(m) => {
                let inner: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("map[{}]", inner.join(" "))
            }
            V::Struct(fields) => {
                let inner: Vec<String> = fields.values().map(V::print).collect();
                format!("{{{}}}", inner.join(" "))
            }
            V::Obj(fields) => {
                let inner: Vec<String> = fields.values().map(V::print).collect();
                format!("{{{}}}", inner.join(" "))
            }
            V::List(items) => {
                let inner: Vec<String> = items.iter().map(V::print).collect();
                format!("[{}]", inner.join(" "))
            }
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            V::Nil => "nil",
            V::Bool(_) => "bool",
            V::Int(_) => "int",
            V::Float(_) => "float64",
            V::Str(_) => "string",
            V::Map(_) => "map[string]string",
            V::Struct(_) | V::Obj(_) => "struct",
            V::List(_) => "slice",
        }
    }

    /// Prometheus's `convertToFloat`: numbers, and strings that parse.
    fn to_float(&self) -> Result<f64, TemplateError> {
        match self {
            V::Float(f) => Ok(*f),
            V::Int(i) => Ok(*i as f64),
            V::Str(s) => s
                .parse::<f64>()
                .or_else(|_| err(format!("strconv.ParseFloat: parsing {s:?}: invalid syntax"))),
            other => err(format!("can't convert {} to float", other.type_name())),
        }
    }

    fn as_str(&self) -> Result<&str, TemplateError> {
        match self {
            V::Str(s) => Ok(s),
            other => err(format!(
                "wrong type for value; expected string; got {}",
                other.type_name()
            )),
        }
    }
}

// ---------------------------------------------------------------- lexing ---

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `.a.b` (empty for `.`).
    Field(Vec<String>),
    /// `$x.a.b` (`$` alone is the name "").
    Var(String, Vec<String>),
    Str(String),
    Num(String),
    Pipe,
    LParen,
    RParen,
    Declare,
    Assign,
    Comma,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Action(Vec<Tok>),
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn lex_action(src: &str) -> Result<Vec<Tok>, TemplateError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let path = |chars: &[char], i: &mut usize| -> Vec<String> {
        let mut fields = Vec::new();
        while *i < chars.len() && chars[*i] == '.' {
            *i += 1;
            let start = *i;
            while *i < chars.len() && is_ident(chars[*i]) {
                *i += 1;
            }
            if *i > start {
                fields.push(chars[start..*i].iter().collect());
            }
        }
        fields
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '|' => {
                out.push(Tok::Pipe);
                i += 1;
            }
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
                if i < chars.len() && chars[i] == '.' {
                    return err("field access on a parenthesized pipeline is not supported");
                }
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Declare);
                i += 2;
            }
            '=' => {
                out.push(Tok::Assign);
                i += 1;
            }
            '.' if !chars.get(i + 1).is_some_and(char::is_ascii_digit) => {
                out.push(Tok::Field(path(&chars, &mut i)));
            }
            '$' => {
                i += 1;
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                out.push(Tok::Var(name, path(&chars, &mut i)));
            }
            '"' => {
                i += 1;
                let mut s = String::new();
                loop {
                    let Some(&c) = chars.get(i) else {
                        return err("unterminated quoted string");
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let Some(&e) = chars.get(i) else {
                                return err("unterminated quoted string");
                            };
                            i += 1;
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '\\' => '\\',
                                '"' => '"',
                                '\'' => '\'',
                                other => return err(format!("unknown escape sequence \\{other}")),
                            });
                        }
                        '\n' => return err("newline in quoted string"),
                        c => s.push(c),
                    }
                }
                out.push(Tok::Str(s));
            }
            '`' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '`' {
                    i += 1;
                }
                if i >= chars.len() {
                    return err("unterminated raw quoted string");
                }
                out.push(Tok::Str(chars[start..i].iter().collect()));
                i += 1;
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || chars[i] == '.'
                        || ((chars[i] == '-' || chars[i] == '+')
                            && matches!(chars[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
                out.push(Tok::Num(chars[start..i].iter().collect()));
            }
            c if is_ident(c) => {
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return err(format!("unexpected {other:?} in action")),
        }
    }
    Ok(out)
}

fn split(src: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let mut text = &rest[..open];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[open + 2..];
        let trim_before =
            after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n");
        if trim_before {
            text = text.trim_end();
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text.to_string()));
        }
        let body_start = if trim_before { 1 } else { 0 };
        let Some(close) = after.find("}}") else {
            return err("unclosed action");
        };
        let mut body = &after[body_start..close];
        trim_next = false;
        if body.ends_with(" -") || body.ends_with("\t-") || body.ends_with("\n-") {
            body = &body[..body.len() - 1];
            trim_next = true;
        }
        let trimmed = body.trim();
        if !(trimmed.starts_with("/*") && trimmed.ends_with("*/")) {
            pieces.push(Piece::Action(lex_action(body)?));
        }
        rest = &after[close + 2..];
    }
    let mut text = rest;
    if trim_next {
        text = text.trim_start();
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text.to_string()));
    }
    Ok(pieces)
}

// --------------------------------------------------------------- parsing ---

#[derive(Debug, Clone)]
enum Arg {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Lit(V),
    Func(String),
    Pipe(Box<Pipeline>),
}

#[derive(Debug, Clone)]
struct Pipeline {
    /// Variables declared (`:=`) or assigned (`=`).
    vars: Vec<String>,
    declare: bool,
    commands: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Vec<(Pipeline, Vec<Node>)>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Vec<(Pipeline, Vec<Node>)>, Vec<Node>),
}

/// The functions a template may call.
const FUNCTIONS: &[&str] = &[
    "and",
    "or",
    "not",
    "len",
    "index",
    "print",
    "printf",
    "println",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "urlquery",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toUpper",
    "toLower",
    "title",
    "reReplaceAll",
    "match",
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "sortByLabel",
    "args",
    "safeHtml",
    "stripPort",
    "parseDuration",
    "toTime",
    "externalURL",
    "pathPrefix",
    "graphLink",
    "tableLink",
];

struct Parser {
    pieces: Vec<Piece>,
    at: usize,
}

enum Stop {
    Eof,
    End,
    Else(Vec<Tok>),
}

impl Parser {
    fn list(&mut self, depth: usize) -> Result<(Vec<Node>, Stop), TemplateError> {
        if depth > MAX_NESTING {
            return err(format!(
                "blocks nest more than {MAX_NESTING} deep (if, range, with)"
            ));
        }
        let mut nodes = Vec::new();
        while let Some(piece) = self.pieces.get(self.at).cloned() {
            self.at += 1;
            match piece {
                Piece::Text(t) => nodes.push(Node::Text(t)),
                Piece::Action(toks) => match toks.first() {
                    Some(Tok::Ident(k)) if k == "end" => return Ok((nodes, Stop::End)),
                    Some(Tok::Ident(k)) if k == "else" => {
                        return Ok((nodes, Stop::Else(toks[1..].to_vec())));
                    }
                    Some(Tok::Ident(k)) if k == "if" || k == "with" => {
                        let with = k == "with";
                        let mut branches = Vec::new();
                        let mut cond = pipeline(&toks[1..])?;
                        let otherwise = loop {
                            let (body, end) = self.list(depth + 1)?;
                            branches.push((cond, body));
                            match end {
                                Stop::End => break Vec::new(),
                                Stop::Eof => return err(format!("unexpected EOF in {k}")),
                                Stop::Else(rest) => match rest.first() {
                                    Some(Tok::Ident(k2)) if k2 == k => {
                                        cond = pipeline(&rest[1..])?;
                                    }
                                    None => {
                                        let (body, end) = self.list(depth + 1)?;
                                        if !matches!(end, Stop::End) {
                                            return err(format!("expected end after else in {k}"));
                                        }
                                        break body;
                                    }
                                    Some(_) => return err("unexpected tokens after else"),
                                },
                            }
                        };
                        nodes.push(if with {
                            Node::With(branches, otherwise)
                        } else {
                            Node::If(branches, otherwise)
                        });
                    }
                    Some(Tok::Ident(k)) if k == "range" => {
                        let pipe = pipeline(&toks[1..])?;
                        let (body, end) = self.list(depth + 1)?;
                        let otherwise = match end {
                            Stop::End => Vec::new(),
                            Stop::Eof => return err("unexpected EOF in range"),
                            Stop::Else(rest) => {
                                if !rest.is_empty() {
                                    return err("unexpected tokens after else in range");
                                }
                                let (body, end) = self.list(depth + 1)?;
                                if !matches!(end, Stop::End) {
                                    return err("expected end after else in range");
                                }
                                body
                            }
                        };
                        nodes.push(Node::Range(pipe, body, otherwise));
                    }
                    Some(Tok::Ident(k))
                        if matches!(
                            k.as_str(),
                            "define" | "template" | "block" | "break" | "continue"
                        ) =>
                    {
                        return err(format!("{k:?} is not supported in alert templates"));
                    }
                    _ => nodes.push(Node::Action(pipeline(&toks)?)),
                },
            }
        }
        Ok((nodes, Stop::Eof))
    }
}

fn pipeline(toks: &[Tok]) -> Result<Pipeline, TemplateError> {
    let mut depth = 0usize;
    for t in toks {
        match t {
            Tok::LParen => depth += 1,
            Tok::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_NESTING {
            return err(format!("parentheses nest more than {MAX_NESTING} deep"));
        }
    }
    let mut vars = Vec::new();
    let mut declare = false;
    let mut toks = toks;
    // `$x :=`, `$i, $e :=`, `$x =`
    let decl_at = toks
        .iter()
        .position(|t| matches!(t, Tok::Declare | Tok::Assign));
    if let Some(at) = decl_at
        && toks[..at]
            .iter()
            .all(|t| matches!(t, Tok::Var(_, f) if f.is_empty()) || *t == Tok::Comma)
    {
        for t in &toks[..at] {
            if let Tok::Var(name, _) = t {
                vars.push(name.clone());
            }
        }
        declare = toks[at] == Tok::Declare;
        toks = &toks[at + 1..];
    }
    let mut commands = Vec::new();
    let mut i = 0;
    let mut current = Vec::new();
    while i < toks.len() {
        match &toks[i] {
            Tok::Pipe => {
                if current.is_empty() {
                    return err("missing command before |");
                }
                commands.push(std::mem::take(&mut current));
                i += 1;
            }
            Tok::LParen => {
                let mut depth = 0;
                let start = i + 1;
                let mut end = None;
                for (j, t) in toks.iter().enumerate().skip(i) {
                    match t {
                        Tok::LParen => depth += 1,
                        Tok::RParen => {
                            depth -= 1;
                            if depth == 0 {
                                end = Some(j);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let Some(end) = end else {
                    return err("unclosed left paren");
                };
                current.push(Arg::Pipe(Box::new(pipeline(&toks[start..end])?)));
                i = end + 1;
            }
            Tok::RParen => return err("unexpected right paren"),
            Tok::Ident(name) => {
                current.push(match name.as_str() {
                    "true" => Arg::Lit(V::Bool(true)),
                    "false" => Arg::Lit(V::Bool(false)),
                    "nil" => Arg::Lit(V::Nil),
                    f if FUNCTIONS.contains(&f) => Arg::Func(f.to_string()),
                    f => return err(format!("function {f:?} not defined")),
                });
                i += 1;
            }
            Tok::Field(f) => {
                current.push(Arg::Field(f.clone()));
                i += 1;
            }
            Tok::Var(n, f) => {
                current.push(Arg::Var(n.clone(), f.clone()));
                i += 1;
            }
            Tok::Str(s) => {
                current.push(Arg::Lit(V::Str(s.clone())));
                i += 1;
            }
            Tok::Num(n) => {
                current.push(Arg::Lit(number(n)?));
                i += 1;
            }
            Tok::Declare | Tok::Assign | Tok::Comma => {
                return err("unexpected := or , in pipeline");
            }
        }
    }
    if !current.is_empty() {
        commands.push(current);
    }
    if commands.is_empty() {
        return err("missing value for command");
    }
    Ok(Pipeline {
        vars,
        declare,
        commands,
    })
}

fn number(text: &str) -> Result<V, TemplateError> {
    let t = text.strip_prefix('+').unwrap_or(text);
    let hex = t.strip_prefix("0x").or_else(|| t.strip_prefix("-0x"));
    if let Some(h) = hex
        && let Ok(i) = i64::from_str_radix(h, 16)
    {
        return Ok(V::Int(if t.starts_with('-') { -i } else { i }));
    }
    if let Ok(i) = t.parse::<i64>() {
        return Ok(V::Int(i));
    }
    if !t.contains("Inf")
        && !t.contains("NaN")
        && let Ok(f) = t.parse::<f64>()
    {
        return Ok(V::Float(f));
    }
    err(format!("bad number syntax: {text:?}"))
}

// ------------------------------------------------------------ evaluation ---

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

impl Template {
    /// Parses a template; errors name what is wrong.
    pub fn parse(src: &str) -> Result<Self, TemplateError> {
        if src.len() > MAX_TEMPLATE_BYTES {
            return err(format!(
                "template is {} bytes, more than the limit of {MAX_TEMPLATE_BYTES}",
                src.len()
            ));
        }
        let mut parser = Parser {
            pieces: split(src)?,
            at: 0,
        };
        let (nodes, end) = parser.list(0)?;
        match end {
            Stop::Eof => Ok(Self { nodes }),
            Stop::End => err("unexpected {{end}}"),
            Stop::Else(_) => err("unexpected {{else}}"),
        }
    }

    /// Expands the template over JSON data (a notification's), with object
    /// keys as Go field names (`receiver` is `.Receiver`, `generatorURL` is
    /// `.GeneratorURL`); objects of strings are maps (`.Labels.instance`).
    pub fn render_json(&self, data: &serde_json::Value) -> Result<String, TemplateError> {
        let dot = from_json(data, true);
        let mut env = Env::new(vec![(String::new(), dot.clone())], None, String::new());
        let mut out = String::new();
        env.walk(&self.nodes, &dot, &mut out)?;
        Ok(out)
    }

    /// Expands the template over `data`; `query` runs the `query` function
    /// (without it, `query` is an error).
    pub fn render(
        &self,
        data: &TemplateData,
        query: Option<QueryFn<'_>>,
    ) -> Result<String, TemplateError> {
        let dot = V::Struct(BTreeMap::from([
            ("Labels", V::Map(data.labels.clone())),
            ("ExternalLabels", V::Map(data.external_labels.clone())),
            ("ExternalURL", V::Str(data.external_url.clone())),
            ("Value", V::Float(data.value)),
        ]));
        let mut env = Env::new(
            vec![
                (String::new(), dot.clone()),
                ("labels".into(), V::Map(data.labels.clone())),
                (
                    "externalLabels".into(),
                    V::Map(data.external_labels.clone()),
                ),
                ("externalURL".into(), V::Str(data.external_url.clone())),
                ("value".into(), V::Float(data.value)),
            ],
            query,
            data.external_url.clone(),
        );
        let mut out = String::new();
        env.walk(&self.nodes, &dot, &mut out)?;
        Ok(out)
    }
}

/// Parses and expands in one go.
pub fn expand(
    src: &str,
    data: &TemplateData,
    query: Option<QueryFn<'_>>,
) -> Result<String, TemplateError> {
    Template::parse(src)?.render(data, query)
}

struct Env<'q> {
    vars: Vec<(String, V)>,
    query: Option<QueryFn<'q>>,
    external_url: String,
    /// The expansion's budget: steps taken, queries run, when it started.
    steps: u64,
    queries: u32,
    started: std::time::Instant,
}

fn field(v: &V, path: &[String]) -> Result<V, TemplateError> {
    let mut v = v.clone();
    for f in path {
        v = match &v {
            V::Map(m) => V::Str(m.get(f).cloned().unwrap_or_default()),
            V::Struct(s) => match s.iter().find(|(k, _)| *k == f) {
                Some((_, v)) => v.clone(),
                None => return err(format!("can't evaluate field {f}")),
            },
            V::Obj(s) => match s.get(f) {
                Some(v) => v.clone(),
                None => return err(format!("can't evaluate field {f}")),
            },
            V::Nil => return err(format!("nil pointer evaluating .{f}")),
            other => {
                return err(format!(
                    "can't evaluate field {f} in type {}",
                    other.type_name()
                ));
            }
        };
    }
    Ok(v)
}

impl<'q> Env<'q> {
    fn new(vars: Vec<(String, V)>, query: Option<QueryFn<'q>>, external_url: String) -> Self {
        Self {
            vars,
            query,
            external_url,
            steps: 0,
            queries: 0,
            started: std::time::Instant::now(),
        }
    }

    /// One more step of the expansion: refused past [`MAX_STEPS`],
    /// [`MAX_OUTPUT_BYTES`] of output or [`MAX_EXPANSION_TIME`].
    fn tick(&mut self, out: &str) -> Result<(), TemplateError> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return err(format!("expansion took more than {MAX_STEPS} steps"));
        }
        if out.len() > MAX_OUTPUT_BYTES {
            return err(format!(
                "expansion wrote more than {MAX_OUTPUT_BYTES} bytes"
            ));
        }
        if self.steps.is_multiple_of(256) && self.started.elapsed() > MAX_EXPANSION_TIME {
            return err(format!("expansion took longer than {MAX_EXPANSION_TIME:?}"));
        }
        Ok(())
    }

    fn var(&self, name: &str) -> Result<V, TemplateError> {
        match self.vars.iter().rev().find(|(n, _)| n == name) {
            Some((_, v)) => Ok(v.clone()),
            None => err(format!("undefined variable: ${name}")),
        }
    }

    fn walk(&mut self, nodes: &[Node], dot: &V, out: &mut String) -> Result<(), TemplateError> {
        for node in nodes {
            self.tick(out)?;
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipeline(p, dot)?;
                    if p.vars.is_empty() {
                        out.push_str(&v.print());
                    }
                }
                Node::If(branches, otherwise) | Node::With(branches, otherwise) => {
                    let with = matches!(node, Node::With(..));
                    let depth = self.vars.len();
                    let mut done = false;
                    for (cond, body) in branches {
                        let v = self.pipeline(cond, dot)?;
                        if v.truth() {
                            let inner = if with { v } else { dot.clone() };
                            self.walk(body, &inner, out)?;
                            done = true;
                            break;
                        }
                    }
                    if !done {
                        self.walk(otherwise, dot, out)?;
                    }
                    self.vars.truncate(depth);
                }
                Node::Range(p, body, otherwise) => {
                    let depth = self.vars.len();
                    let mut bare = p.clone();
                    bare.vars.clear();
                    let v = self.pipeline(&bare, dot)?;
                    let items: Vec<(V, V)> = match v {
                        V::List(l) => l
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| (V::Int(i as i64), v))
                            .collect(),
                        V::Map(m) => m.into_iter().map(|(k, v)| (V::Str(k), V::Str(v))).collect(),
                        V::Int(n) if n > MAX_STEPS as i64 => {
                            return err(format!("range over {n}: more than {MAX_STEPS} steps"));
                        }
                        V::Int(n) => (0..n).map(|i| (V::Int(i), V::Int(i))).collect(),
                        V::Nil => Vec::new(),
                        other => {
                            return err(format!("range can't iterate over {}", other.print()));
                        }
                    };
                    if items.is_empty() {
                        self.walk(otherwise, dot, out)?;
                    }
                    for (key, item) in items {
                        self.tick(out)?;
                        match p.vars.as_slice() {
                            [] => {}
                            [e] => self.vars.push((e.clone(), item.clone())),
                            [k, e, ..] => {
                                self.vars.push((k.clone(), key));
                                self.vars.push((e.clone(), item.clone()));
                            }
                        }
                        self.walk(body, &item, out)?;
                        self.vars.truncate(depth);
                    }
                }
            }
        }
        Ok(())
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &V) -> Result<V, TemplateError> {
        let mut value: Option<V> = None;
        for cmd in &p.commands {
            value = Some(self.command(cmd, dot, value)?);
        }
        let v = value.unwrap_or(V::Nil);
        for name in &p.vars {
            if p.declare {
                self.vars.push((name.clone(), v.clone()));
            } else if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                slot.1 = v.clone();
            } else {
                return err(format!("undefined variable: ${name}"));
            }
        }
        Ok(v)
    }

    fn arg(&mut self, a: &Arg, dot: &V) -> Result<V, TemplateError> {
        match a {
            Arg::Field(path) => field(dot, path),
            Arg::Var(name, path) => field(&self.var(name)?, path),
            Arg::Lit(v) => Ok(v.clone()),
            Arg::Pipe(p) => self.pipeline(p, dot),
            Arg::Func(f) => self.call(f, Vec::new()),
        }
    }

    fn command(&mut self, cmd: &[Arg], dot: &V, piped: Option<V>) -> Result<V, TemplateError> {
        match cmd.first() {
            Some(Arg::Func(f)) => {
                // `and`/`or` stop at the first deciding argument.
                let mut args = Vec::with_capacity(cmd.len());
                for a in &cmd[1..] {
                    args.push(self.arg(a, dot)?);
                }
                if let Some(p) = piped {
                    args.push(p);
                }
                self.call(f, args)
            }
            Some(single) if cmd.len() == 1 => {
                if piped.is_some() {
                    return err("can't give argument to non-function");
                }
                self.arg(single, dot)
            }
            _ => err("can't give argument to non-function"),
        }
    }

    fn call(&mut self, f: &str, args: Vec<V>) -> Result<V, TemplateError> {
        let n = args.len();
        let want = |k: usize| -> Result<(), TemplateError> {
            if n == k {
                Ok(())
            } else {
                err(format!("wrong number of args for {f}: want {k} got {n}"))
            }
        };
        let float = |i: usize| -> Result<f64, TemplateError> { args[i].to_float() };
        Ok(match f {
            "and" => {
                if n == 0 {
                    return err("wrong number of args for and: want at least 1 got 0");
                }
                args.iter()
                    .find(|a| !a.truth())
                    .cloned()
                    .unwrap_or_else(|| args[n - 1].clone())
            }
            "or" => {
                if n == 0 {
                    return err("wrong number of args for or: want at least 1 got 0");
                }
                args.iter()
                    .find(|a| a.truth())
                    .cloned()
                    .unwrap_or_else(|| args[n - 1].clone())
            }
            "not" => {
                want(1)?;
                V::Bool(!args[0].truth())
            }
            "len" => {
                want(1)?;
                V::Int(match &args[0] {
                    V::Str(s) => s.len(),
                    V::Map(m) => m.len(),
                    V::List(l) => l.len(),
                    other => return err(format!("len of type {}", other.type_name())),
                } as i64)
            }
            "index" => {
                if n < 1 {
                    return err("wrong number of args for index");
                }
                let mut v = args[0].clone();
                for key in &args[1..] {
                    v = match (&v, key) {
                        (V::Map(m), V::Str(k)) => V::Str(m.get(k).cloned().unwrap_or_default()),
                        (V::List(l), V::Int(i)) => {
                            match usize::try_from(*i).ok().and_then(|i| l.get(i)) {
                                Some(x) => x.clone(),
                                None => return err(format!("index out of range: {i}")),
                            }
                        }
                        _ => return err("can't index item"),
                    };
                }
                v
            }
            "print" => {
                // fmt.Sprint: spaces only between operands that are not strings.
                let mut s = String::new();
                for (i, a) in args.iter().enumerate() {
                    if i > 0 && !matches!(a, V::Str(_)) && !matches!(args[i - 1], V::Str(_)) {
                        s.push(' ');
                    }
                    s.push_str(&a.print());
                }
                V::Str(s)
            }
            "println" => {
                let parts: Vec<String> = args.iter().map(V::print).collect();
                V::Str(format!("{}\n", parts.join(" ")))
            }
            "printf" => {
                if n == 0 {
                    return err("wrong number of args for printf: want at least 1 got 0");
                }
                V::Str(sprintf(args[0].as_str()?, &args[1..]))
            }
            "eq" => {
                if n < 2 {
                    return err("missing argument for comparison");
                }
                let mut any = false;
                for b in &args[1..] {
                    if compare(&args[0], b)? == std::cmp::Ordering::Equal {
                        any = true;
                    }
                }
                V::Bool(any)
            }
            "ne" | "lt" | "le" | "gt" | "ge" => {
                want(2)?;
                let o = compare(&args[0], &args[1])?;
                use std::cmp::Ordering::*;
                V::Bool(match f {
                    "ne" => o != Equal,
                    "lt" => o == Less,
                    "le" => o != Greater,
                    "gt" => o == Greater,
                    _ => o != Less,
                })
            }
            "urlquery" => {
                let s: String = args.iter().map(V::print).collect();
                V::Str(query_escape(&s))
            }
            "humanize" => {
                want(1)?;
                V::Str(humanize(float(0)?))
            }
            "humanize1024" => {
                want(1)?;
                V::Str(humanize1024(float(0)?))
            }
            "humanizeDuration" => {
                want(1)?;
                V::Str(humanize_duration(float(0)?))
            }
            "humanizePercentage" => {
                want(1)?;
                V::Str(format!("{}%", format_g(float(0)? * 100.0, Some(4))))
            }
            "humanizeTimestamp" => {
                want(1)?;
                V::Str(humanize_timestamp(float(0)?)?)
            }
            "toUpper" => {
                want(1)?;
                V::Str(args[0].as_str()?.to_uppercase())
            }
            "toLower" => {
                want(1)?;
                V::Str(args[0].as_str()?.to_lowercase())
            }
            "title" => {
                want(1)?;
                V::Str(title(args[0].as_str()?))
            }
            "reReplaceAll" => {
                want(3)?;
                let re =
                    Regex::new(args[0].as_str()?).or_else(|e| err(format!("reReplaceAll: {e}")))?;
                V::Str(
                    re.replace_all(args[2].as_str()?, args[1].as_str()?)
                        .into_owned(),
                )
            }
            "match" => {
                want(2)?;
                let re = Regex::new(args[0].as_str()?).or_else(|e| err(format!("match: {e}")))?;
                V::Bool(re.is_match(args[1].as_str()?))
            }
            "query" => {
                want(1)?;
                let Some(q) = self.query else {
                    return err("query is not available here");
                };
                self.queries += 1;
                if self.queries > MAX_QUERIES {
                    return err(format!("more than {MAX_QUERIES} queries in one expansion"));
                }
                if self.started.elapsed() > MAX_EXPANSION_TIME {
                    return err(format!("expansion took longer than {MAX_EXPANSION_TIME:?}"));
                }
                let samples = q(args[0].as_str()?).map_err(TemplateError)?;
                V::List(samples.into_iter().map(sample_value).collect())
            }
            "first" => {
                want(1)?;
                match &args[0] {
                    V::List(l) => match l.first() {
                        Some(v) => v.clone(),
                        None => return err("first() called on vector with no elements"),
                    },
                    other => return err(format!("first of {}", other.type_name())),
                }
            }
            "label" => {
                want(2)?;
                let name = args[0].as_str()?;
                field(&args[1], &["Labels".to_string(), name.to_string()])?
            }
            "value" => {
                want(1)?;
                field(&args[0], &["Value".to_string()])?
            }
            "strvalue" => {
                want(1)?;
                field(&args[0], &["Labels".to_string(), "__value__".to_string()])?
            }
            "sortByLabel" => {
                want(2)?;
                let name = args[0].as_str()?.to_string();
                let V::List(mut l) = args[1].clone() else {
                    return err("sortByLabel of a non-list");
                };
                l.sort_by_key(|s| {
                    field(s, &["Labels".to_string(), name.clone()])
                        .map(|v| v.print())
                        .unwrap_or_default()
                });
                V::List(l)
            }
            "args" => {
                let mut m = BTreeMap::new();
                for (i, a) in args.iter().enumerate() {
                    m.insert(format!("arg{i}"), a.print());
                }
                V::Map(m)
            }
            "safeHtml" => {
                want(1)?;
                V::Str(args[0].print())
            }
            "stripPort" => {
                want(1)?;
                let s = args[0].as_str()?;
                V::Str(strip_port(s))
            }
            "parseDuration" => {
                want(1)?;
                let s = args[0].as_str()?;
                let ms = vigil_shared::config::parse_duration_ms(s).map_err(TemplateError)?;
                V::Float(ms as f64 / 1000.0)
            }
            "toTime" => {
                want(1)?;
                V::Str(humanize_timestamp(float(0)?)?)
            }
            "externalURL" => V::Str(self.external_url.clone()),
            "pathPrefix" => V::Str(String::new()),
            "graphLink" | "tableLink" => {
                want(1)?;
                let tab = if f == "graphLink" { 0 } else { 1 };
                V::Str(format!(
                    "/graph?g0.expr={}&g0.tab={tab}",
                    query_escape(args[0].as_str()?)
                ))
            }
            other => return err(format!("function {other:?} not defined")),
        })
    }
}

fn from_json(v: &serde_json::Value, top: bool) -> V {
    use serde_json::Value as J;
    match v {
        J::Null => V::Nil,
        J::Bool(b) => V::Bool(*b),
        J::Number(n) => n
            .as_i64()
            .map(V::Int)
            .unwrap_or_else(|| V::Float(n.as_f64().unwrap_or(0.0))),
        J::String(s) => V::Str(s.clone()),
        J::Array(a) => V::List(a.iter().map(|x| from_json(x, true)).collect()),
        J::Object(o) if !top || (!o.is_empty() && o.values().all(J::is_string)) => V::Map(
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect(),
        ),
        J::Object(o) => V::Obj(
            o.iter()
                .map(|(k, v)| {
                    let mut name = k.clone();
                    if let Some(first) = name.get_mut(0..1) {
                        first.make_ascii_uppercase();
                    }
                    // Labels and annotations stay maps, even when empty.
                    let map_field = matches!(
                        k.as_str(),
                        "labels"
                            | "annotations"
                            | "groupLabels"
                            | "commonLabels"
                            | "commonAnnotations"
                    );
                    (name, from_json(v, !map_field))
                })
                .collect(),
        ),
    }
}

fn sample_value(s: QuerySample) -> V {
    V::Struct(BTreeMap::from([
        ("Labels", V::Map(s.labels)),
        ("Value", V::Float(s.value)),
    ]))
}

fn compare(a: &V, b: &V) -> Result<std::cmp::Ordering, TemplateError> {
    use std::cmp::Ordering;
    match (a, b) {
        (V::Int(x), V::Int(y)) => Ok(x.cmp(y)),
        (V::Float(x), V::Float(y)) => Ok(x.partial_cmp(y).unwrap_or(Ordering::Less)),
        (V::Str(x), V::Str(y)) => Ok(x.cmp(y)),
        (V::Bool(x), V::Bool(y)) => Ok(x.cmp(y)),
        (x, y) => err(format!(
            "incompatible types for comparison: {} and {}",
            x.type_name(),
            y.type_name()
        )),
    }
}

const SMALL: [&str; 8] = ["m", "u", "n", "p", "f", "a", "z", "y"];

/// Prometheus's `humanize`: SI prefixes, four significant digits.
pub fn humanize(mut v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return format_g(v, Some(4));
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in SMALL {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", format_g(v, Some(4)))
}

/// Prometheus's `humanize1024`: binary prefixes.
pub fn humanize1024(mut v: f64) -> String {
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return format_g(v, Some(4));
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", format_g(v, Some(4)))
}

/// Prometheus's `humanizeDuration`: seconds as `1d 2h 3m 4s`.
pub fn humanize_duration(mut v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return format_g(v, Some(4));
    }
    if v == 0.0 {
        return format!("{}s", format_g(v, Some(4)));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        v = v.abs();
        let d = v as i64;
        let (seconds, minutes, hours, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
        if days != 0 {
            return format!("{sign}{days}d {hours}h {minutes}m {seconds}s");
        }
        if hours != 0 {
            return format!("{sign}{hours}h {minutes}m {seconds}s");
        }
        if minutes != 0 {
            return format!("{sign}{minutes}m {seconds}s");
        }
        return format!("{sign}{}s", format_g(v, Some(4)));
    }
    let mut prefix = "";
    for p in SMALL {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", format_g(v, Some(4)))
}

/// Prometheus's `humanizeTimestamp`: Go's `time.Time` printing, in UTC,
/// to the millisecond.
pub fn humanize_timestamp(v: f64) -> Result<String, TemplateError> {
    if v.is_nan() || v.is_infinite() {
        return Ok(format_g(v, Some(4)));
    }
    let nanos = v * 1e9;
    if nanos >= i64::MAX as f64 || nanos <= i64::MIN as f64 {
        return err(format!(
            "{} cannot be represented as a nanoseconds timestamp since it overflows int64",
            format_g(v, None)
        ));
    }
    let (y, mo, d, h, mi, sec, frac) =
        crate::gofmt::utc_parts((nanos as i64).div_euclid(1_000_000));
    let mut out = format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{sec:02}");
    if frac != 0 {
        let f = format!("{frac:03}");
        let _ = write!(out, ".{}", f.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    Ok(out)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Go's `strings.Title`: the first letter of each word upper-cased.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_sep = true;
    for c in s.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = (c.is_whitespace() || c.is_ascii()) && c != '_' && !c.is_alphanumeric();
    }
    out
}

fn strip_port(s: &str) -> String {
    if let Some(rest) = s.strip_prefix('[')
        && let Some(end) = rest.find(']')
    {
        return rest[..end].to_string();
    }
    match s.rsplit_once(':') {
        Some((host, _)) if !host.contains(':') => host.to_string(),
        _ => s.to_string(),
    }
}

/// Go's `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Go's `fmt.Sprintf` for the verbs alert templates use: `%v %s %d %f %e %g
/// %q %x %t %%`, with flags `-+0 ` and width / precision.
fn sprintf(format: &str, args: &[V]) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    let mut next = 0usize;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero, mut space) = (false, false, false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => {}
                _ => break,
            }
            chars.next();
        }
        let mut width = String::new();
        while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            chars.next();
        }
        let mut prec: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                chars.next();
            }
            prec = Some(if p.len() > 7 {
                usize::MAX
            } else {
                p.parse().unwrap_or(0)
            });
        }
        // Go's fmt refuses widths and precisions over 1e6 (`tooLarge`),
        // says so, and formats the value without them.
        if width.len() > 7 || width.parse::<usize>().unwrap_or(0) > MAX_FORMAT_WIDTH {
            out.push_str("%!(BADWIDTH)");
            width.clear();
        }
        if prec.is_some_and(|p| p > MAX_FORMAT_WIDTH) {
            out.push_str("%!(BADPREC)");
            prec = None;
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next += 1;
        let bad = || format!("%!{verb}({}={})", arg.type_name(), arg.print());
        let mut body = match (verb, arg) {
            ('v', V::Float(f)) | ('g', V::Float(f)) => {
                let s = format_g(*f, prec);
                if plus && !s.starts_with('-') && !s.starts_with('+') {
                    format!("+{s}")
                } else {
                    s
                }
            }
            ('v', a) => a.print(),
            ('s', V::Str(s)) => match prec {
                Some(p) => s.chars().take(p).collect(),
                None => s.clone(),
            },
            ('s', V::Map(_) | V::List(_)) => arg.print(),
            ('q', V::Str(s)) => format!("{s:?}"),
            ('t', V::Bool(b)) => b.to_string(),
            ('d', V::Int(i)) => {
                if plus && *i >= 0 {
                    format!("+{i}")
                } else {
                    i.to_string()
                }
            }
            ('x', V::Int(i)) => format!("{i:x}"),
            ('X', V::Int(i)) => format!("{i:X}"),
            ('x', V::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
            ('f' | 'F', V::Float(f)) => format_f(*f, prec.unwrap_or(6), plus),
            ('f' | 'F', V::Int(_)) => bad(),
            ('e', V::Float(f)) => format_e(*f, prec.unwrap_or(6), plus),
            ('E', V::Float(f)) => format_e(*f, prec.unwrap_or(6), plus).to_uppercase(),
            _ => bad(),
        };
        if space
            && !body.starts_with('-')
            && !body.starts_with('+')
            && matches!(arg, V::Int(_) | V::Float(_))
        {
            body.insert(0, ' ');
        }
        let width: usize = width.parse().unwrap_or(0);
        let len = body.chars().count();
        if len < width {
            let pad = width - len;
            if minus {
                body.push_str(&" ".repeat(pad));
            } else if zero
                && matches!(arg, V::Int(_) | V::Float(_))
                && body.chars().any(|c| c.is_ascii_digit())
            {
                let sign_len = usize::from(body.starts_with(['-', '+', ' ']));
                body.insert_str(sign_len, &"0".repeat(pad));
            } else {
                body.insert_str(0, &" ".repeat(pad));
            }
        }
        out.push_str(&body);
    }
    if next < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| format!("{}={}", a.type_name(), a.print()))
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(value: f64) -> TemplateData {
        TemplateData {
            labels: BTreeMap::from([
                ("instance".to_string(), "web-1:9100".to_string()),
                ("job".to_string(), "node".to_string()),
            ]),
            external_labels: BTreeMap::from([("dc".to_string(), "eu".to_string())]),
            external_url: "http://vigil:9470".into(),
            value,
        }
    }

    fn run(src: &str, value: f64) -> String {
        match expand(src, &data(value), None) {
            Ok(s) => s,
            Err(e) => format!("ERROR {e}"),
        }
    }

    #[test]
    fn variables_fields_and_pipelines() {
        assert_eq!(
            run("{{ $labels.instance }} is {{ $value }}", 0.5),
            "web-1:9100 is 0.5"
        );
        assert_eq!(
            run("{{ .Labels.job }}/{{ $externalLabels.dc }}", 1.0),
            "node/eu"
        );
        assert_eq!(run("{{ $labels.missing }}|", 1.0), "|");
        assert_eq!(
            run("{{ $labels }}", 1.0),
            "map[instance:web-1:9100 job:node]"
        );
        assert_eq!(run("{{ $value | printf \"%.2f\" }}", 2.0 / 3.0), "0.67");
        assert_eq!(run("{{ printf \"%.1f%%\" $value }}", 93.25), "93.2%");
        assert_eq!(run("{{ $value | humanize }}", 1234567.0), "1.235M");
        assert_eq!(run("{{ humanize1024 $value }}", 1048576.0), "1Mi");
        assert_eq!(run("{{ humanizePercentage $value }}", 0.1234), "12.34%");
        assert_eq!(run("{{ humanizeDuration $value }}", 93784.0), "1d 2h 3m 4s");
        assert_eq!(run("{{ humanizeDuration $value }}", 0.25), "250ms");
        assert_eq!(
            run("{{ humanizeTimestamp $value }}", 1_435_065_584.128),
            "2015-06-23 13:19:44.128 +0000 UTC"
        );
        assert_eq!(
            run(
                "{{ $labels.job | toUpper }} {{ \"A b\" | toLower }} {{ title \"disk full now\" }}",
                1.0
            ),
            "NODE a b Disk Full Now"
        );
        assert_eq!(
            run(
                "{{ reReplaceAll \"(.*):.*\" \"$1\" $labels.instance }}",
                1.0
            ),
            "web-1"
        );
        assert_eq!(run("{{ $x := 5 }}{{ $x }}", 1.0), "5");
    }

    #[test]
    fn control_flow_and_trimming() {
        let src =
            "{{ if gt $value 80.0 }}high{{ else if gt $value 50.0 }}mid{{ else }}low{{ end }}";
        assert_eq!(run(src, 90.0), "high");
        assert_eq!(run(src, 60.0), "mid");
        assert_eq!(run(src, 10.0), "low");
        assert_eq!(run("a  {{- \"b\" -}}  c", 1.0), "abc");
        assert_eq!(
            run("{{ with $labels.job }}job={{ . }}{{ end }}", 1.0),
            "job=node"
        );
        assert_eq!(
            run(
                "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}",
                1.0
            ),
            "instance=web-1:9100;job=node;"
        );
        assert_eq!(run("{{/* a comment */}}x", 1.0), "x");
        assert_eq!(
            run(
                "{{ if and (eq $labels.job \"node\") (ne $value 0.0) }}yes{{ end }}",
                1.0
            ),
            "yes"
        );
    }

    #[test]
    fn errors_name_what_is_wrong() {
        assert_eq!(
            Template::parse("{{ nope $value }}").err(),
            Some(TemplateError("function \"nope\" not defined".into()))
        );
        assert!(Template::parse("{{ if true }}x").is_err());
        assert!(Template::parse("{{ $value ").is_err());
        assert!(run("{{ gt $value 80 }}", 1.0).starts_with("ERROR template: incompatible types"));
    }

    #[test]
    fn query_results_can_be_walked() {
        let q = |_: &str| {
            Ok(vec![QuerySample {
                labels: BTreeMap::from([("instance".to_string(), "a".to_string())]),
                value: 3.0,
            }])
        };
        let out = expand(
            "{{ range query \"up\" }}{{ .Labels.instance }}={{ .Value }}{{ end }} {{ query \"up\" | first | value }}",
            &data(1.0),
            Some(&q),
        );
        assert_eq!(out, Ok("a=3 3".to_string()));
    }

    #[test]
    fn hostile_templates_are_refused_or_stopped_by_the_budget() {
        let deep = format!(
            "{}x{}",
            "{{ if true }}".repeat(100),
            "{{ end }}".repeat(100)
        );
        let e = Template::parse(&deep).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("nest more than 64")));
        let parens = format!("{{{{ {}1{} }}}}", "(".repeat(100), ")".repeat(100));
        assert!(Template::parse(&parens).is_err());
        let huge = "x".repeat(MAX_TEMPLATE_BYTES + 1);
        assert!(Template::parse(&huge).is_err());

        let e = expand("{{ range 1000000000000 }}x{{ end }}", &data(1.0), None);
        assert!(e.is_err_and(|e| e.to_string().contains("steps")));
        let e = expand(
            "{{ range 900000 }}xxxxxxxxxxxxxxxxxxxx{{ end }}",
            &data(1.0),
            None,
        );
        assert!(e.is_err_and(|e| e.to_string().contains("bytes")));
        assert_eq!(
            expand("{{ printf \"%099999999d\" 1 }}", &data(1.0), None),
            Ok("%!(BADWIDTH)1".to_string())
        );

        // `range query` seven deep: stopped after MAX_QUERIES queries.
        let calls = std::cell::Cell::new(0u32);
        let q = |_: &str| {
            calls.set(calls.get() + 1);
            Ok((0..10)
                .map(|i| QuerySample {
                    labels: BTreeMap::from([("i".to_string(), i.to_string())]),
                    value: 1.0,
                })
                .collect())
        };
        let nested = format!(
            "{}x{}",
            "{{ range query \"up\" }}".repeat(7),
            "{{ end }}".repeat(7)
        );
        let e = expand(&nested, &data(1.0), Some(&q));
        assert!(e.is_err_and(|e| e.to_string().contains("queries")));
        assert_eq!(calls.get(), MAX_QUERIES);
    }
}
