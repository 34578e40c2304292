//! The subset of Go's `text/template` that docker's `--format` flags take, over JSON values:
//! literal text, `{{.Field.Sub}}`, `{{.}}`, `$` and range variables, pipelines (`a | b`),
//! parenthesised calls, `{{if}}`/`{{else}}`, `{{with}}`, `{{range}}` (with `$k, $v :=`),
//! `{{- trim -}}` markers, comments, and the functions docker adds (`json`, `join`, `split`,
//! `lower`, `upper`, `title`, `truncate`, `pad`, `println`) besides Go's `index`, `len`,
//! `print`, `printf`, `eq`, `ne`, `not`, `and`, `or`.
//!
//! Values print as Go prints the `interface{}` values docker decodes: slices as `[a b]`, maps
//! as `map[k:v]` (keys sorted), null as `<nil>`. A missing key is an error, worded as Go words
//! it under docker's `missingkey=error`.

use serde_json::{Map, Value};

/// A parsed template.
#[derive(Debug)]
pub struct Template {
    /// The name errors give (docker names some templates: `version`).
    name: String,
    source: String,
    nodes: Vec<Node>,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Action(Pipe),
    If {
        vars: Vec<String>,
        pipe: Pipe,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        vars: Vec<String>,
        pipe: Pipe,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Range {
        vars: Vec<String>,
        pipe: Pipe,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

/// `cmd | cmd | …`, with its place in the source for error messages.
#[derive(Debug, Clone)]
struct Pipe {
    pos: usize,
    text: String,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
enum Arg {
    /// `.` followed by zero or more field names.
    Field(Vec<String>),
    /// `$name` (`$` alone is the root) followed by field names.
    Var(String, Vec<String>),
    Str(String),
    Num(Value),
    Bool(bool),
    Nil,
    Func(String),
    Sub(Box<Pipe>),
}

/// A template error, worded as Go's `text/template` words it (`template: :1:2: …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

const FUNCTIONS: &[&str] = &[
    "json", "index", "join", "split", "lower", "upper", "title", "truncate", "pad", "len", "print",
    "println", "printf", "eq", "ne", "not", "and", "or",
];

impl Template {
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        Template::parse_named("", source)
    }

    /// A template whose errors carry `name`, as Go's `template.New(name)`.
    pub fn parse_named(name: &str, source: &str) -> Result<Template, TemplateError> {
        Template::parse_source(source)
            .map(|mut t| {
                t.name = name.to_string();
                t
            })
            .map_err(|e| named(e, name))
    }

    fn parse_source(source: &str) -> Result<Template, TemplateError> {
        let items = lex_items(source)?;
        let mut parser = Parser {
            source,
            items,
            next: 0,
        };
        let (nodes, end) = parser.list()?;
        if let Some((word, pos)) = end {
            return Err(parse_error(
                source,
                pos,
                &format!("unexpected {{{{{word}}}}}"),
            ));
        }
        Ok(Template {
            name: String::new(),
            source: source.to_string(),
            nodes,
        })
    }

    /// Renders the template with `data` as `.` and `$`.
    pub fn render(&self, data: &Value) -> Result<String, TemplateError> {
        let mut exec = Exec {
            source: &self.source,
            root: data,
            vars: Vec::new(),
            out: String::new(),
        };
        exec.nodes(&self.nodes, data)
            .map_err(|e| named(e, &self.name))?;
        Ok(exec.out)
    }
}

/// An error of the unnamed template, as the template named `name` reports it.
fn named(error: TemplateError, name: &str) -> TemplateError {
    if name.is_empty() {
        return error;
    }
    let text = error
        .0
        .replacen("template: :", &format!("template: {name}:"), 1)
        .replacen("executing \"\"", &format!("executing {name:?}"), 1);
    TemplateError(text)
}

/// One piece of the source: text, or an action's inside (trimmed of `{{- -}}` markers).
enum Item {
    Text(String),
    Action { pos: usize, body: String },
}

fn line_col(source: &str, pos: usize) -> (usize, usize) {
    let before = &source[..pos.min(source.len())];
    let line = 1 + before.matches('\n').count();
    let col = before.rfind('\n').map_or(pos, |nl| pos - nl - 1);
    (line, col)
}

fn parse_error(source: &str, pos: usize, message: &str) -> TemplateError {
    let (line, _) = line_col(source, pos);
    TemplateError(format!("template: :{line}: {message}"))
}

fn lex_items(source: &str) -> Result<Vec<Item>, TemplateError> {
    let mut items = Vec::new();
    let mut rest = 0;
    let mut trim_next = false;
    while rest <= source.len() {
        let Some(open) = source[rest..].find("{{").map(|i| i + rest) else {
            let mut text = &source[rest..];
            if trim_next {
                text = text.trim_start();
            }
            if !text.is_empty() {
                items.push(Item::Text(text.to_string()));
            }
            break;
        };
        let mut text = &source[rest..open];
        if trim_next {
            text = text.trim_start();
        }
        let mut inner_start = open + 2;
        let trim_before = source[inner_start..].starts_with("- ")
            || source[inner_start..].starts_with("-\t")
            || source[inner_start..].starts_with("-\n");
        if trim_before {
            text = text.trim_end();
            inner_start += 1;
        }
        if !text.is_empty() {
            items.push(Item::Text(text.to_string()));
        }
        let close = find_close(source, inner_start)
            .ok_or_else(|| parse_error(source, open, "unclosed action"))?;
        let mut inner_end = close;
        trim_next = false;
        let inner = &source[inner_start..close];
        if inner.ends_with(" -") || inner.ends_with("\t-") || inner.ends_with("\n-") {
            inner_end -= 1;
            trim_next = true;
        }
        let body = source[inner_start..inner_end].trim();
        if !(body.starts_with("/*") && body.ends_with("*/")) {
            let lead = source[inner_start..inner_end].len()
                - source[inner_start..inner_end].trim_start().len();
            items.push(Item::Action {
                pos: inner_start + lead,
                body: body.to_string(),
            });
        }
        rest = close + 2;
    }
    Ok(items)
}

/// The `}}` that closes the action starting at `from`, skipping quoted strings.
fn find_close(source: &str, from: usize) -> Option<usize> {
    let bytes = source.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            b'\n' => return None,
            _ => {}
        }
        i += 1;
    }
    None
}

struct Parser<'a> {
    source: &'a str,
    items: Vec<Item>,
    next: usize,
}

impl Parser<'_> {
    /// Nodes up to an `{{else}}` or `{{end}}` (returned with its position) or the end.
    #[allow(clippy::type_complexity)]
    fn list(&mut self) -> Result<(Vec<Node>, Option<(String, usize)>), TemplateError> {
        let mut nodes = Vec::new();
        while self.next < self.items.len() {
            let index = self.next;
            self.next += 1;
            let (pos, body) = match &self.items[index] {
                Item::Text(text) => {
                    nodes.push(Node::Text(text.clone()));
                    continue;
                }
                Item::Action { pos, body } => (*pos, body.clone()),
            };
            let (keyword, rest) = match body.split_once(char::is_whitespace) {
                Some((k, r)) => (k, r.trim()),
                None => (body.as_str(), ""),
            };
            let rest_pos = pos + body.len() - rest.len();
            match keyword {
                "end" | "else" if rest.is_empty() => return Ok((nodes, Some((body, pos)))),
                "if" | "with" | "range" => {
                    let (vars, pipe_text, pipe_pos) = split_declaration(rest, rest_pos);
                    if pipe_text.is_empty() {
                        return Err(parse_error(
                            self.source,
                            pos,
                            &format!("missing value for {keyword}"),
                        ));
                    }
                    let pipe = parse_pipe(self.source, pipe_text, pipe_pos)?;
                    let (then, end) = self.list()?;
                    let otherwise = match end {
                        Some((word, _)) if word == "else" => match self.list()? {
                            (nodes, Some((word, _))) if word == "end" => nodes,
                            _ => return Err(parse_error(self.source, pos, "unexpected EOF")),
                        },
                        Some(_) => Vec::new(),
                        None => return Err(parse_error(self.source, pos, "unexpected EOF")),
                    };
                    nodes.push(match keyword {
                        "if" => Node::If {
                            vars,
                            pipe,
                            then,
                            otherwise,
                        },
                        "with" => Node::With {
                            vars,
                            pipe,
                            then,
                            otherwise,
                        },
                        _ => Node::Range {
                            vars,
                            pipe,
                            body: then,
                            otherwise,
                        },
                    });
                }
                "" => return Err(parse_error(self.source, pos, "missing value for command")),
                _ => nodes.push(Node::Action(parse_pipe(self.source, &body, pos)?)),
            }
        }
        Ok((nodes, None))
    }
}

/// `$k, $v := PIPE` → the variable names and the pipeline.
fn split_declaration(text: &str, pos: usize) -> (Vec<String>, &str, usize) {
    if let Some((vars, pipe)) = text.split_once(":=") {
        let names: Vec<String> = vars.split(',').map(|v| v.trim().to_string()).collect();
        if names.iter().all(|n| n.starts_with('$') && n.len() > 1) {
            let trimmed = pipe.trim_start();
            let offset = text.len() - trimmed.len();
            return (names, trimmed.trim_end(), pos + offset);
        }
    }
    (Vec::new(), text, pos)
}

fn parse_pipe(source: &str, text: &str, pos: usize) -> Result<Pipe, TemplateError> {
    let tokens = tokenize(source, text, pos)?;
    let mut index = 0;
    let pipe = pipe_tokens(source, text, pos, &tokens, &mut index)?;
    if index < tokens.len() {
        return Err(parse_error(
            source,
            pos,
            &format!("unexpected {:?} in command", tokens[index].1),
        ));
    }
    Ok(pipe)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Pipe,
    Open,
    Close,
}

fn tokenize(source: &str, text: &str, pos: usize) -> Result<Vec<(usize, Tok)>, TemplateError> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                tokens.push((at, Tok::Pipe));
                i += 1;
            }
            '(' => {
                tokens.push((at, Tok::Open));
                i += 1;
            }
            ')' => {
                tokens.push((at, Tok::Close));
                i += 1;
            }
            '"' => {
                let mut value = String::new();
                i += 1;
                loop {
                    let Some(&(_, c)) = chars.get(i) else {
                        return Err(parse_error(source, pos, "unterminated quoted string"));
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let Some(&(_, e)) = chars.get(i) else {
                                return Err(parse_error(source, pos, "unterminated quoted string"));
                            };
                            i += 1;
                            value.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                other => other,
                            });
                        }
                        c => value.push(c),
                    }
                }
                tokens.push((at, Tok::Str(value)));
            }
            '`' => {
                let mut value = String::new();
                i += 1;
                loop {
                    let Some(&(_, c)) = chars.get(i) else {
                        return Err(parse_error(source, pos, "unterminated raw quoted string"));
                    };
                    i += 1;
                    if c == '`' {
                        break;
                    }
                    value.push(c);
                }
                tokens.push((at, Tok::Str(value)));
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].1.is_whitespace()
                    && !"|()\"`".contains(chars[i].1)
                {
                    i += 1;
                }
                let end = chars.get(i).map_or(text.len(), |&(p, _)| p);
                tokens.push((at, Tok::Word(text[chars[start].0..end].to_string())));
            }
        }
    }
    Ok(tokens)
}

fn pipe_tokens(
    source: &str,
    text: &str,
    pos: usize,
    tokens: &[(usize, Tok)],
    index: &mut usize,
) -> Result<Pipe, TemplateError> {
    let start = tokens.get(*index).map_or(text.len(), |t| t.0);
    let mut cmds = vec![Vec::new()];
    while let Some((at, tok)) = tokens.get(*index) {
        match tok {
            Tok::Close => break,
            Tok::Pipe => {
                if cmds.last().is_none_or(Vec::is_empty) {
                    return Err(parse_error(source, pos, "missing command"));
                }
                cmds.push(Vec::new());
                *index += 1;
            }
            Tok::Open => {
                *index += 1;
                let sub = pipe_tokens(source, text, pos, tokens, index)?;
                if tokens.get(*index).map(|t| &t.1) != Some(&Tok::Close) {
                    return Err(parse_error(source, pos, "unclosed left paren"));
                }
                *index += 1;
                push_arg(&mut cmds, Arg::Sub(Box::new(sub)));
            }
            Tok::Str(s) => {
                push_arg(&mut cmds, Arg::Str(s.clone()));
                *index += 1;
            }
            Tok::Word(word) => {
                let arg = word_arg(source, pos + at, word)?;
                push_arg(&mut cmds, arg);
                *index += 1;
            }
        }
    }
    if cmds.last().is_none_or(Vec::is_empty) {
        return Err(parse_error(source, pos, "missing value for command"));
    }
    let end = tokens.get(*index).map_or(text.len(), |t| t.0);
    Ok(Pipe {
        pos: pos + start,
        text: text[start..end].trim().to_string(),
        cmds,
    })
}

fn push_arg(cmds: &mut [Vec<Arg>], arg: Arg) {
    if let Some(last) = cmds.last_mut() {
        last.push(arg);
    }
}

fn word_arg(source: &str, pos: usize, word: &str) -> Result<Arg, TemplateError> {
    let fields = |rest: &str| -> Vec<String> {
        rest.split('.')
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect()
    };
    if let Some(rest) = word.strip_prefix('.') {
        return Ok(Arg::Field(fields(rest)));
    }
    if let Some(rest) = word.strip_prefix('$') {
        let (name, chain) = rest.split_once('.').unwrap_or((rest, ""));
        return Ok(Arg::Var(format!("${name}"), fields(chain)));
    }
    match word {
        "true" => return Ok(Arg::Bool(true)),
        "false" => return Ok(Arg::Bool(false)),
        "nil" => return Ok(Arg::Nil),
        _ => {}
    }
    if word.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        if let Ok(n) = word.parse::<i64>() {
            return Ok(Arg::Num(Value::from(n)));
        }
        if let Ok(f) = word.parse::<f64>() {
            return Ok(Arg::Num(Value::from(f)));
        }
    }
    if FUNCTIONS.contains(&word) {
        return Ok(Arg::Func(word.to_string()));
    }
    Err(parse_error(
        source,
        pos,
        &format!("function {word:?} not defined"),
    ))
}

struct Exec<'a> {
    source: &'a str,
    root: &'a Value,
    vars: Vec<(String, Value)>,
    out: String,
}

impl Exec<'_> {
    fn nodes(&mut self, nodes: &[Node], dot: &Value) -> Result<(), TemplateError> {
        for node in nodes {
            match node {
                Node::Text(text) => self.out.push_str(text),
                Node::Action(pipe) => {
                    let value = self.pipe(pipe, dot)?;
                    self.out.push_str(&go_string(&value));
                }
                Node::If {
                    vars,
                    pipe,
                    then,
                    otherwise,
                } => {
                    let value = self.pipe(pipe, dot)?;
                    let depth = self.declare(vars, &value);
                    let branch = if truthy(&value) { then } else { otherwise };
                    let result = self.nodes(branch, dot);
                    self.vars.truncate(depth);
                    result?;
                }
                Node::With {
                    vars,
                    pipe,
                    then,
                    otherwise,
                } => {
                    let value = self.pipe(pipe, dot)?;
                    let depth = self.declare(vars, &value);
                    let result = if truthy(&value) {
                        self.nodes(then, &value)
                    } else {
                        self.nodes(otherwise, dot)
                    };
                    self.vars.truncate(depth);
                    result?;
                }
                Node::Range {
                    vars,
                    pipe,
                    body,
                    otherwise,
                } => {
                    let value = self.pipe(pipe, dot)?;
                    let entries: Vec<(Value, Value)> = match &value {
                        Value::Array(items) => items
                            .iter()
                            .enumerate()
                            .map(|(i, v)| (Value::from(i), v.clone()))
                            .collect(),
                        Value::Object(map) => map
                            .iter()
                            .map(|(k, v)| (Value::from(k.clone()), v.clone()))
                            .collect(),
                        Value::Null | Value::String(_) => Vec::new(),
                        other => {
                            return Err(self.exec_error(
                                pipe,
                                &format!("range can't iterate over {}", go_string(other)),
                            ));
                        }
                    };
                    if entries.is_empty() {
                        self.nodes(otherwise, dot)?;
                    }
                    for (key, item) in entries {
                        let depth = self.vars.len();
                        match vars.as_slice() {
                            [v] => self.vars.push((v.clone(), item.clone())),
                            [k, v] => {
                                self.vars.push((k.clone(), key));
                                self.vars.push((v.clone(), item.clone()));
                            }
                            _ => {}
                        }
                        let result = self.nodes(body, &item);
                        self.vars.truncate(depth);
                        result?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `{{if $x := …}}`, `{{with $x := …}}`: the variable, for the rest of the block. Returns
    /// the depth to truncate to at its end.
    fn declare(&mut self, vars: &[String], value: &Value) -> usize {
        let depth = self.vars.len();
        if let Some(name) = vars.first() {
            self.vars.push((name.clone(), value.clone()));
        }
        depth
    }

    fn exec_error(&self, pipe: &Pipe, message: &str) -> TemplateError {
        let (line, col) = line_col(self.source, pipe.pos);
        TemplateError(format!(
            "template: :{line}:{col}: executing \"\" at <{}>: {message}",
            pipe.text
        ))
    }

    fn pipe(&mut self, pipe: &Pipe, dot: &Value) -> Result<Value, TemplateError> {
        let mut previous: Option<Value> = None;
        for cmd in &pipe.cmds {
            previous = Some(self.command(pipe, cmd, dot, previous)?);
        }
        Ok(previous.unwrap_or(Value::Null))
    }

    fn command(
        &mut self,
        pipe: &Pipe,
        cmd: &[Arg],
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, TemplateError> {
        let Some(first) = cmd.first() else {
            return Ok(Value::Null);
        };
        if let Arg::Func(name) = first {
            let mut args = Vec::new();
            for arg in &cmd[1..] {
                args.push(self.arg(pipe, arg, dot)?);
            }
            args.extend(piped);
            return call(name, &args)
                .map_err(|e| self.exec_error(pipe, &format!("error calling {name}: {e}")));
        }
        if cmd.len() > 1 || piped.is_some() {
            return Err(self.exec_error(pipe, "can't give argument to non-function"));
        }
        self.arg(pipe, first, dot)
    }

    fn arg(&mut self, pipe: &Pipe, arg: &Arg, dot: &Value) -> Result<Value, TemplateError> {
        match arg {
            Arg::Field(chain) => self.fields(pipe, dot, chain),
            Arg::Var(name, chain) => {
                let base = if name == "$" {
                    self.root.clone()
                } else {
                    match self.vars.iter().rev().find(|(n, _)| n == name) {
                        Some((_, v)) => v.clone(),
                        None => {
                            return Err(parse_error(
                                self.source,
                                pipe.pos,
                                &format!("undefined variable: {name}"),
                            ));
                        }
                    }
                };
                self.fields(pipe, &base, chain)
            }
            Arg::Str(s) => Ok(Value::from(s.clone())),
            Arg::Num(n) => Ok(n.clone()),
            Arg::Bool(b) => Ok(Value::from(*b)),
            Arg::Nil => Ok(Value::Null),
            Arg::Func(name) => call(name, &[])
                .map_err(|e| self.exec_error(pipe, &format!("error calling {name}: {e}"))),
            Arg::Sub(sub) => self.pipe(sub, dot),
        }
    }

    fn fields(&self, pipe: &Pipe, base: &Value, chain: &[String]) -> Result<Value, TemplateError> {
        let mut value = base.clone();
        for name in chain {
            value = match &value {
                Value::Object(map) => match map.get(name) {
                    Some(v) => v.clone(),
                    None => {
                        return Err(
                            self.exec_error(pipe, &format!("map has no entry for key {name:?}"))
                        );
                    }
                },
                Value::Null => {
                    return Err(self.exec_error(
                        pipe,
                        &format!("nil pointer evaluating interface {{}}.{name}"),
                    ));
                }
                other => {
                    return Err(self.exec_error(
                        pipe,
                        &format!("can't evaluate field {name} in type {}", go_type(other)),
                    ));
                }
            };
        }
        Ok(value)
    }
}

fn go_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "interface {}",
        Value::Bool(_) => "bool",
        Value::Number(_) => "json.Number",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// A value as Go's `fmt.Sprint` prints the `interface{}` docker decodes from JSON.
pub fn go_string(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_string).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}:{}", go_string(v)))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

fn as_str(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!(
            "wrong type for value; expected string; got {}",
            go_type(other)
        )),
    }
}

fn as_int(value: &Value) -> Result<i64, String> {
    value
        .as_i64()
        .ok_or_else(|| format!("cannot index with {}", go_string(value)))
}

fn want(args: &[Value], n: usize, name: &str) -> Result<(), String> {
    if args.len() == n {
        Ok(())
    } else {
        Err(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        ))
    }
}

fn call(name: &str, args: &[Value]) -> Result<Value, String> {
    match name {
        "json" => {
            want(args, 1, name)?;
            serde_json::to_string(&args[0])
                .map(Value::from)
                .map_err(|e| e.to_string())
        }
        "index" => {
            let Some((first, keys)) = args.split_first() else {
                return Err("wrong number of args for index: want at least 1 got 0".into());
            };
            let mut value = first.clone();
            for key in keys {
                value = match &value {
                    Value::Array(items) => {
                        let i = as_int(key)?;
                        usize::try_from(i)
                            .ok()
                            .and_then(|i| items.get(i))
                            .cloned()
                            .ok_or_else(|| format!("index out of range: {i}"))?
                    }
                    Value::Object(map) => map.get(&as_str(key)?).cloned().unwrap_or(Value::Null),
                    Value::String(text) => {
                        let i = as_int(key)?;
                        let byte = usize::try_from(i).ok().and_then(|i| text.as_bytes().get(i));
                        Value::from(*byte.ok_or_else(|| format!("index out of range: {i}"))?)
                    }
                    Value::Null => return Err("index of untyped nil".into()),
                    other => return Err(format!("can't index item of type {}", go_type(other))),
                };
            }
            Ok(value)
        }
        "join" => {
            want(args, 2, name)?;
            let sep = as_str(&args[1])?;
            let items: Vec<String> = match &args[0] {
                Value::Array(items) => items.iter().map(go_string).collect(),
                Value::Null => Vec::new(),
                other => {
                    return Err(format!(
                        "wrong type for value; expected []string; got {}",
                        go_type(other)
                    ));
                }
            };
            Ok(Value::from(items.join(&sep)))
        }
        "split" => {
            want(args, 2, name)?;
            let (text, sep) = (as_str(&args[0])?, as_str(&args[1])?);
            Ok(Value::Array(
                text.split(sep.as_str()).map(Value::from).collect(),
            ))
        }
        "lower" => Ok(Value::from(as_str(one(args, name)?)?.to_lowercase())),
        "upper" => Ok(Value::from(as_str(one(args, name)?)?.to_uppercase())),
        "title" => {
            let text = as_str(one(args, name)?)?;
            let mut out = String::new();
            let mut start = true;
            for c in text.chars() {
                if start {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                start = c.is_whitespace();
            }
            Ok(Value::from(out))
        }
        "truncate" => {
            want(args, 2, name)?;
            let text = as_str(&args[0])?;
            let n = usize::try_from(as_int(&args[1])?).unwrap_or(0);
            Ok(Value::from(text.chars().take(n).collect::<String>()))
        }
        "pad" => {
            want(args, 3, name)?;
            let text = as_str(&args[0])?;
            let before = usize::try_from(as_int(&args[1])?).unwrap_or(0);
            let after = usize::try_from(as_int(&args[2])?).unwrap_or(0);
            Ok(Value::from(format!(
                "{}{text}{}",
                " ".repeat(before),
                " ".repeat(after)
            )))
        }
        "len" => {
            let n = match one(args, name)? {
                Value::Array(a) => a.len(),
                Value::Object(m) => m.len(),
                Value::String(s) => s.len(),
                other => return Err(format!("len of type {}", go_type(other))),
            };
            Ok(Value::from(n))
        }
        "print" => Ok(Value::from(go_print(args, false))),
        "println" => Ok(Value::from(go_print(args, true))),
        "printf" => {
            let Some((format, rest)) = args.split_first() else {
                return Err("wrong number of args for printf: want at least 1 got 0".into());
            };
            Ok(Value::from(printf(&as_str(format)?, rest)))
        }
        "eq" | "ne" => {
            if args.len() < 2 {
                return Err("missing argument for comparison".to_string());
            }
            let equal = args[1..].iter().any(|other| loosely_equal(&args[0], other));
            Ok(Value::from(if name == "eq" { equal } else { !equal }))
        }
        "not" => Ok(Value::from(!truthy(one(args, name)?))),
        "and" => Ok(args
            .iter()
            .find(|v| !truthy(v))
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Null)),
        "or" => Ok(args
            .iter()
            .find(|v| truthy(v))
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Null)),
        other => Err(format!("function {other:?} not defined")),
    }
}

fn one<'a>(args: &'a [Value], name: &str) -> Result<&'a Value, String> {
    want(args, 1, name)?;
    Ok(&args[0])
}

fn loosely_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Go's `fmt.Sprint` (spaces only between operands when neither is a string) and `Sprintln`.
fn go_print(args: &[Value], line: bool) -> String {
    let mut out = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 && (line || !(arg.is_string() || args[i - 1].is_string())) {
            out.push(' ');
        }
        out.push_str(&go_string(arg));
    }
    if line {
        out.push('\n');
    }
    out
}

/// `printf` with the verbs templates use: `%s`, `%v`, `%d`, `%q` and `%%`.
fn printf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(verb) => match args.next() {
                Some(arg) if verb == 'q' => out.push_str(&format!("{:?}", go_string(arg))),
                Some(arg) => out.push_str(&go_string(arg)),
                None => out.push_str(&format!("%!{verb}(MISSING)")),
            },
            None => out.push_str("%!(NOVERB)"),
        }
    }
    out
}

/// Whether `--format` asks for a template rather than a named format (`table`, `json`).
pub fn is_template(format: &str) -> bool {
    format.contains("{{")
}

/// An object with keys in a given order, for data that templates render.
pub fn object(entries: Vec<(&str, Value)>) -> Value {
    let mut map = Map::new();
    for (k, v) in entries {
        map.insert(k.to_string(), v);
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: &str, data: &Value) -> Result<String, String> {
        Template::parse(template)
            .and_then(|t| t.render(data))
            .map_err(|e| e.0)
    }

    fn image() -> Value {
        json!({
            "Id": "sha256:abc",
            "RepoTags": ["app:1", "app:latest"],
            "RepoDigests": [],
            "Config": {
                "Env": ["PATH=/bin", "A=1"],
                "Cmd": null,
                "Labels": {"b": "2", "a": "1"},
            },
            "Size": 1234,
        })
    }

    /// Renders each template over [`image`], checking it gives its expected text.
    #[track_caller]
    fn assert_renders(cases: &[(&str, &str)]) {
        let data = image();
        for &(template, want) in cases {
            assert_eq!(render(template, &data).as_deref(), Ok(want), "{template:?}");
        }
    }

    #[test]
    fn fields_print_as_go_prints_them() {
        assert_renders(&[
            ("{{.Id}}", "sha256:abc"),
            ("{{.Config.Env}}", "[PATH=/bin A=1]"),
            ("{{.Config.Labels}}", "map[a:1 b:2]"),
            ("{{.RepoDigests}}", "[]"),
            ("{{.Config.Cmd}}", "<nil>"),
            ("{{.Size}}", "1234"),
            (
                "id={{.Id}} tags={{.RepoTags}}\n",
                "id=sha256:abc tags=[app:1 app:latest]\n",
            ),
        ]);
    }

    #[test]
    fn functions_and_pipelines() {
        assert_renders(&[
            ("{{index .RepoTags 0}}", "app:1"),
            ("{{index .Config.Labels \"b\"}}", "2"),
            ("{{json .Config.Env}}", r#"["PATH=/bin","A=1"]"#),
            ("{{.Config.Env | json}}", r#"["PATH=/bin","A=1"]"#),
            ("{{join .RepoTags \",\"}}", "app:1,app:latest"),
            ("{{len .RepoTags}}", "2"),
            ("{{upper (index .RepoTags 1)}}", "APP:LATEST"),
            ("{{printf \"%s-%d\" .Id .Size}}", "sha256:abc-1234"),
        ]);
        let data = image();
        let all: Value = serde_json::from_str(&render("{{json .}}", &data).unwrap()).unwrap();
        assert_eq!(all, data);
    }

    #[test]
    fn control_structures() {
        assert_renders(&[
            ("{{range .RepoTags}}{{.}} {{end}}", "app:1 app:latest "),
            (
                "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
                "a=1;b=2;",
            ),
            ("{{range .RepoDigests}}x{{else}}none{{end}}", "none"),
            ("{{if .Config.Cmd}}cmd{{else}}no cmd{{end}}", "no cmd"),
            ("{{with .Config}}{{index .Env 1}}{{end}}", "A=1"),
            ("{{if eq .Size 1234}}big{{end}}", "big"),
            ("a  {{- .Size -}}  b{{/* note */}}", "a1234b"),
            (
                "{{range .RepoTags}}{{$.Id}} {{end}}",
                "sha256:abc sha256:abc ",
            ),
            (
                "{{with $c := .Config}}{{index $c.Env 0}}{{end}}",
                "PATH=/bin",
            ),
            ("{{index .Id 1}}", "104"),
        ]);
    }

    #[test]
    fn odd_input_is_an_error_not_a_panic() {
        let data = image();
        for text in [
            "{{",
            "}}",
            "{{-}}",
            "{{ - }}",
            "{{/*}}",
            "{{(}}",
            "{{)}}",
            "{{|}}",
            "{{$}}",
            "{{.|json}}",
            "{{end}}",
            "{{else}}",
            "{{é}}",
            "é{{.Id}}é",
            "{{\"",
            "{{`x}}",
            "{{range}}{{end}}",
            "{{index}}",
            "{{len 1}}",
            "{{json}}",
            "{{- -}}",
            "{{.Id -}}",
            "{{$x := 1}}",
            "{{range $a, $b, $c := .RepoTags}}{{end}}",
            "{{printf}}",
            "{{printf \"%d %\" 1}}",
            "{{truncate .Id -1}}",
            "{{pad .Id 1}}",
        ] {
            let _ = render(text, &data);
        }
    }

    #[test]
    fn errors_are_worded_as_go_words_them() {
        let data = image();
        for (template, want) in [
            (
                "{{.Nope}}",
                r#"template: :1:2: executing "" at <.Nope>: map has no entry for key "Nope""#,
            ),
            (
                "x\n {{.Config.Nope}}",
                r#"template: :2:3: executing "" at <.Config.Nope>: map has no entry for key "Nope""#,
            ),
            ("{{.Id", "template: :1: unclosed action"),
            (
                "{{frob .Id}}",
                r#"template: :1: function "frob" not defined"#,
            ),
            (
                "{{index .RepoTags 5}}",
                r#"template: :1:2: executing "" at <index .RepoTags 5>: error calling index: index out of range: 5"#,
            ),
        ] {
            assert_eq!(
                render(template, &data).as_ref().map_err(String::as_str),
                Err(want),
                "{template:?}"
            );
        }
        assert!(render("{{if .Id}}x", &data).is_err());
    }
}
