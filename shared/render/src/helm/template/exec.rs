//! Go `text/template` execution with Helm's options (`missingkey=zero`): variables and
//! their scopes, pipelines, field and method access, control structures, named templates.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, LazyLock};

use rustc_hash::FxHashMap as HashMap;

use super::parse::{Arg, Branch, Cmd, Named, Node, Num, Pipe, SourceText, TemplateSet};
use crate::helm::funcs::{self, Body, ExecFn, FnError, P};
use crate::helm::value::{Value, watched_reads};

/// Go's limit on nested template calls (`text/template` maxExecDepth is 100000; Helm's
/// `include` stops at 1000 repetitions of one name).
const MAX_DEPTH: usize = 10_000;
const MAX_INCLUDE: usize = 1000;

/// Why execution stopped.
#[derive(Debug, Clone)]
pub struct ExecError {
    /// `file:line:col` of the node that failed.
    pub location: String,
    /// The template being executed (a file or a `define` name).
    pub template: String,
    /// The failing node's source text.
    pub context: String,
    /// What went wrong.
    pub message: String,
    /// Raised by `fail` or `required` (Helm prints these as `execution error at (…)`).
    pub user: bool,
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.user {
            return write!(f, "execution error at ({}): {}", self.location, self.message);
        }
        // Helm v4 prints errors raised by the template machinery itself as a trace, and
        // keeps Go's one-line form for errors a function returned.
        if let Some(inner) = self.message.strip_prefix("error calling include: ") {
            return write!(
                f,
                "{}\n  executing {:?} at <{}>:\n    error calling include:\n{}",
                self.location, self.template, self.context, inner
            );
        }
        if self.message.starts_with("error calling ") {
            return write!(
                f,
                "template: {}: executing {:?} at <{}>: {}",
                self.location, self.template, self.context, self.message
            );
        }
        write!(f, "{}\n  executing {:?} at <{}>:\n    {}", self.location, self.template, self.context, self.message)
    }
}

/// An error while executing, before it is given a location.
#[derive(Debug)]
pub enum Raise {
    /// An error to be located at the current node.
    Msg(String),
    /// From `fail`/`required`.
    User(String),
    /// Already located (from a nested template).
    Located(Box<ExecError>),
}

impl From<FnError> for Raise {
    fn from(e: FnError) -> Self {
        match e {
            FnError::Msg(m) => Raise::Msg(m),
            FnError::User(m) => Raise::User(m),
        }
    }
}

type R<T> = Result<T, Raise>;

enum Flow {
    Normal,
    Break,
    Continue,
}

/// What a named template printed for one dot, kept while nothing has changed a map since.
struct Memo {
    name: Arc<str>,
    /// The dot (held, so that its address names it while kept).
    dot: Value,
    out: Rc<str>,
    /// It never looked inside `.Template`: it serves every template of the render.
    template_free: bool,
}

/// Memo entries kept before they are dropped (a template including another with a new
/// dictionary each time would otherwise fill it).
const MEMO_LIMIT: usize = 256;

/// `$`, the name every template run declares.
static DOLLAR: LazyLock<Arc<str>> = LazyLock::new(|| "$".into());
/// The file of an execution that has not started.
static NO_FILE: LazyLock<Arc<SourceText>> =
    LazyLock::new(|| Arc::new(SourceText { name: String::new(), text: String::new() }));

/// The state of one execution: a render's templates, one after the other, and what they include.
pub struct Exec<'a> {
    base: &'a TemplateSet,
    overlays: Vec<HashMap<String, Named>>,
    /// Variables: name, value, and whether a nil value is a typed nil (a range element,
    /// on which a field access fails) rather than Go's invalid value (a pipeline result, on
    /// which a field access gives nothing).
    vars: Vec<(Arc<str>, Value, bool)>,
    /// Whether a nil dot is a typed nil (a range element).
    dot_typed: bool,
    file: Arc<SourceText>,
    tname: Arc<str>,
    /// Position and end of the node being evaluated (for error messages).
    at: (usize, usize),
    /// Where Go reports the failing node when that is not its start (a field chain is
    /// located at its second element).
    loc: Option<usize>,
    depth: usize,
    included: HashMap<String, usize>,
    /// Calls so far of functions that change a map in place or give a different result each
    /// time ([`funcs::Func::effect`]).
    effects: u64,
    /// What `include` printed, by dot address, for named templates that ran without such a
    /// call; valid while `effects` is what it was (`memo_effects`).
    memo: HashMap<usize, Vec<Memo>>,
    memo_len: usize,
    memo_effects: u64,
    /// Reuses of outputs that looked inside `.Template` (a run that reuses one depends on it).
    template_hits: u64,
    /// Key and certificate generator calls so far: each is numbered, so two identical calls
    /// stand for two keys.
    generated: u32,
}

impl<'a> Exec<'a> {
    /// A new execution over `set`.
    pub fn new(set: &'a TemplateSet) -> Self {
        Exec {
            base: set,
            overlays: Vec::new(),
            vars: Vec::new(),
            dot_typed: false,
            file: NO_FILE.clone(),
            tname: "".into(),
            at: (0, 0),
            loc: None,
            depth: 0,
            included: HashMap::default(),
            effects: 0,
            memo: HashMap::default(),
            memo_len: 0,
            memo_effects: 0,
            template_hits: 0,
            generated: 0,
        }
    }

    fn lookup(&self, name: &str) -> Option<Named> {
        for o in self.overlays.iter().rev() {
            if let Some(t) = o.get(name) {
                return Some(t.clone());
            }
        }
        self.base.map.get(name).cloned()
    }

    /// What `include` of `name` printed earlier for this very dot, if nothing that changes a
    /// map ran since.
    fn memo_of(&mut self, name: &str, dot: &Value) -> Option<Rc<str>> {
        let Value::Map(map) = dot else { return None };
        if self.memo_effects != self.effects {
            self.memo.clear();
            self.memo_len = 0;
            self.memo_effects = self.effects;
            return None;
        }
        let entries = self.memo.get(&(Rc::as_ptr(map) as usize))?;
        let hit = entries.iter().find(|m| &*m.name == name && matches!(&m.dot, Value::Map(d) if Rc::ptr_eq(d, map)))?;
        if !hit.template_free {
            self.template_hits += 1;
        }
        Some(hit.out.clone())
    }

    fn remember(&mut self, name: &str, dot: Value, out: Rc<str>, template_free: bool) {
        let Value::Map(map) = &dot else { return };
        self.memo_len += 1;
        if self.memo_len > MEMO_LIMIT {
            self.memo.clear();
            self.memo_len = 1;
        }
        self.memo_effects = self.effects;
        let key = Rc::as_ptr(map) as usize;
        self.memo.entry(key).or_default().push(Memo { name: name.into(), dot, out, template_free });
    }

    /// The render moves on to its next template (whose `.Template` differs): what looked
    /// inside `.Template` is forgotten, the rest serves on.
    pub fn next_template(&mut self) {
        for entries in self.memo.values_mut() {
            entries.retain(|m| m.template_free);
        }
        self.memo_len = self.memo.values().map(Vec::len).sum();
    }

    /// Executes the template `name` with `data` as dot, returning its output.
    pub fn execute(&mut self, name: &str, data: Value) -> Result<String, ExecError> {
        let mut out = String::new();
        match self.run_named(name, data, &mut out) {
            Ok(()) => Ok(out),
            Err(r) => Err(self.locate(r)),
        }
    }

    /// `include`: runs a named template into a string, counting nesting like Helm. A named
    /// template that ran on a map without calling a function with an effect printed what it
    /// will print for the same map until such a function runs: that output is reused.
    pub fn include(&mut self, name: &str, data: Value) -> R<Rc<str>> {
        if let Some(out) = self.memo_of(name, &data) {
            return Ok(out);
        }
        let n = match self.included.get_mut(name) {
            Some(n) => n,
            None => self.included.entry(name.to_string()).or_insert(0),
        };
        if *n > MAX_INCLUDE {
            return Err(Raise::Msg(format!(
                "rendering template has a nested reference name: {name}: unable to execute template"
            )));
        }
        *n += 1;
        let mut out = String::new();
        let (effects, reads, hits) = (self.effects, watched_reads(), self.template_hits);
        let r = self.run_named(name, data.clone(), &mut out);
        if let Some(n) = self.included.get_mut(name) {
            *n -= 1;
        }
        match r {
            Ok(()) => {
                let out: Rc<str> = out.into();
                if self.effects == effects {
                    let template_free = watched_reads() == reads && self.template_hits == hits;
                    self.remember(name, data, out.clone(), template_free);
                }
                Ok(out)
            }
            Err(e) => Err(e),
        }
    }

    /// `tpl`: parses `text` as a template named `name` (whose defines are visible only
    /// inside it) and runs it with `data`.
    pub fn tpl(&mut self, name: &str, text: &str, data: Value) -> R<String> {
        let src = Arc::new(SourceText { name: name.to_string(), text: text.to_string() });
        let parsed = super::parse::parse(&src, &funcs::is_func).map_err(|e| {
            Raise::Msg(format!("cannot parse template {text:?}: template: {}:{}: {}", e.name, e.line, e.message))
        })?;
        let mut overlay = HashMap::default();
        for (n, body) in parsed.defines {
            let named = Named { name: n.as_str().into(), body: Arc::new(body), file: src.clone() };
            overlay.insert(n, named);
        }
        self.overlays.push(overlay);
        let saved = self.enter(src, name.into());
        let vars = std::mem::take(&mut self.vars);
        self.vars.push((DOLLAR.clone(), data.clone(), false));
        let mut out = String::new();
        let saved_dot = std::mem::replace(&mut self.dot_typed, false);
        let r = self.nested_list(&parsed.body, &data, &mut out);
        self.dot_typed = saved_dot;
        self.vars = vars;
        self.leave(saved);
        self.overlays.pop();
        match r {
            Ok(_) => Ok(out.replace("<no value>", "")),
            Err(r) => {
                let e = self.locate_in(r);
                Err(Raise::Msg(format!("error during tpl function execution for {text:?}: {e}")))
            }
        }
    }

    fn enter(&mut self, file: Arc<SourceText>, tname: Arc<str>) -> (Arc<SourceText>, Arc<str>, (usize, usize)) {
        self.depth += 1;
        let f = std::mem::replace(&mut self.file, file);
        let t = std::mem::replace(&mut self.tname, tname);
        (f, t, self.at)
    }

    fn leave(&mut self, saved: (Arc<SourceText>, Arc<str>, (usize, usize))) {
        self.depth -= 1;
        self.file = saved.0;
        self.tname = saved.1;
        self.at = saved.2;
    }

    fn run_named(&mut self, name: &str, data: Value, out: &mut String) -> R<()> {
        let Some(Named { name: tname, body, file }) = self.lookup(name) else {
            return Err(Raise::Msg(format!("template: no template {name:?} associated with template \"gotpl\"")));
        };
        if self.depth >= MAX_DEPTH {
            return Err(Raise::Msg(format!("exceeded maximum template depth ({MAX_DEPTH})")));
        }
        let saved = self.enter(file, tname);
        let vars = std::mem::take(&mut self.vars);
        self.vars.push((DOLLAR.clone(), data.clone(), false));
        let saved_dot = std::mem::replace(&mut self.dot_typed, false);
        let r = self.nested_list(&body, &data, out);
        self.dot_typed = saved_dot;
        self.vars = vars;
        let r = r.map_err(|e| Raise::Located(Box::new(self.locate_in(e))));
        self.leave(saved);
        r.map(|_| ())
    }

    /// Runs a nested template's nodes on a stack that grows as needed: a chart may nest
    /// `include`s 1000 deep before Helm's limit stops it, deeper than a thread's stack holds.
    fn nested_list(&mut self, nodes: &[Node], dot: &Value, out: &mut String) -> R<Flow> {
        stacker::maybe_grow(256 * 1024, 8 * 1024 * 1024, || self.list(nodes, dot, out))
    }

    fn locate_in(&self, r: Raise) -> ExecError {
        match r {
            Raise::Located(e) => *e,
            Raise::Msg(message) => self.error(message, false),
            Raise::User(message) => self.error(message, true),
        }
    }

    fn locate(&self, r: Raise) -> ExecError {
        self.locate_in(r)
    }

    fn error(&self, message: String, user: bool) -> ExecError {
        let (line, col) = self.file.line_col(self.loc.unwrap_or(self.at.0));
        let end = self.at.1.max(self.at.0).min(self.file.text.len());
        let context = self.file.text.get(self.at.0..end).unwrap_or("").trim().to_string();
        ExecError {
            location: format!("{}:{}:{}", self.file.name, line, col),
            template: self.tname.to_string(),
            context,
            message,
            user,
        }
    }

    fn list(&mut self, nodes: &[Node], dot: &Value, out: &mut String) -> R<Flow> {
        for n in nodes {
            match self.node(n, dot, out)? {
                Flow::Normal => {}
                other => return Ok(other),
            }
        }
        Ok(Flow::Normal)
    }

    fn node(&mut self, n: &Node, dot: &Value, out: &mut String) -> R<Flow> {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(pipe) => {
                let v = self.pipe(pipe, dot)?;
                if pipe.decl.is_empty() {
                    print_value(out, &v).map_err(Raise::Msg)?;
                }
            }
            Node::If(b) => return self.if_with(b, dot, out, false),
            Node::With(b) => return self.if_with(b, dot, out, true),
            Node::Range(b) => return self.range(b, dot, out),
            Node::Template { pos, name, pipe } => {
                {
                    self.at = (*pos, *pos + name.len() + 12);
                    self.loc = None;
                }
                let data = match pipe {
                    Some(p) => self.pipe(p, dot)?,
                    None => Value::Nil,
                };
                {
                    self.at = (*pos, *pos + name.len() + 12);
                    self.loc = None;
                }
                self.run_named(name, data, out)?;
            }
            Node::Break => return Ok(Flow::Break),
            Node::Continue => return Ok(Flow::Continue),
        }
        Ok(Flow::Normal)
    }

    fn if_with(&mut self, b: &Branch, dot: &Value, out: &mut String, with: bool) -> R<Flow> {
        let mark = self.vars.len();
        let v = self.pipe(&b.pipe, dot)?;
        let truth = v.truthy();
        let r = if truth {
            if with { self.list(&b.list, &v, out) } else { self.list(&b.list, dot, out) }
        } else if let Some(el) = &b.else_list {
            self.list(el, dot, out)
        } else {
            Ok(Flow::Normal)
        };
        self.vars.truncate(mark);
        r
    }

    fn range(&mut self, b: &Branch, dot: &Value, out: &mut String) -> R<Flow> {
        let mark = self.vars.len();
        let v = self.pipe(&b.pipe, dot)?;
        let items: Vec<(Value, Value)> = match &v {
            Value::List(l) => l.iter().enumerate().map(|(i, e)| (Value::Int(i as i64), e.clone())).collect(),
            Value::Map(m) => m.borrow().iter().map(|(k, e)| (Value::str(k.as_str()), e.clone())).collect(),
            Value::Int(n) | Value::Int64(n) => {
                if b.pipe.decl.len() > 1 {
                    return Err(Raise::Msg("can't use ranging over an integer with two variables".into()));
                }
                (0..*n.max(&0)).map(|i| (Value::Int(i), Value::Int(i))).collect()
            }
            Value::Nil => Vec::new(),
            Value::Obj(o) => match o.range_items() {
                Some(items) => items,
                None => return Err(Raise::Msg(format!("range can't iterate over {}", v.to_go_string()))),
            },
            other => return Err(Raise::Msg(format!("range can't iterate over {}", other.to_go_string()))),
        };
        if items.is_empty() {
            let r = match &b.else_list {
                Some(el) => self.list(el, dot, out),
                None => Ok(Flow::Normal),
            };
            self.vars.truncate(mark);
            return r.map(|_| Flow::Normal);
        }
        let inner = self.vars.len();
        for (k, e) in items {
            // The declared variables (set by pipe() to the whole value) get the element.
            match b.pipe.decl.len() {
                1 => self.set_last(0, e.clone()),
                2 => {
                    self.set_last(1, k);
                    self.set_last(0, e.clone());
                }
                _ => {}
            }
            let saved_dot = std::mem::replace(&mut self.dot_typed, true);
            let r = self.list(&b.list, &e, out);
            self.dot_typed = saved_dot;
            let r = r?;
            self.vars.truncate(inner);
            if matches!(r, Flow::Break) {
                break;
            }
        }
        self.vars.truncate(mark);
        Ok(Flow::Normal)
    }

    /// Sets the variable `back` places from the top of the stack.
    fn set_last(&mut self, back: usize, v: Value) {
        let n = self.vars.len();
        if n > back {
            self.vars[n - 1 - back].1 = v;
            self.vars[n - 1 - back].2 = true;
        }
    }

    fn pipe(&mut self, p: &Pipe, dot: &Value) -> R<Value> {
        let mut v: Option<Value> = None;
        for c in &p.cmds {
            v = Some(self.command(c, dot, v)?);
        }
        let v = v.unwrap_or(Value::Nil);
        if p.assign {
            for name in &p.decl {
                match self.vars.iter_mut().rev().find(|(n, _, _)| n == name) {
                    Some(slot) => {
                        slot.1 = v.clone();
                        slot.2 = false;
                    }
                    None => return Err(Raise::Msg(format!("undefined variable: {name}"))),
                }
            }
        } else {
            for name in &p.decl {
                self.vars.push((name.clone(), v.clone(), false));
            }
        }
        Ok(v)
    }

    /// Whether variable `name` holds Go's invalid value (a nil from a pipeline).
    fn var_invalid(&self, name: &str) -> bool {
        self.vars
            .iter()
            .rev()
            .find(|(n, _, _)| **n == *name)
            .is_some_and(|(_, v, typed)| matches!(v, Value::Nil) && !typed)
    }

    fn var(&self, name: &str) -> R<Value> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _, _)| **n == *name)
            .map(|(_, v, _)| v.clone())
            .ok_or_else(|| Raise::Msg(format!("undefined variable: {name}")))
    }

    fn command(&mut self, c: &Cmd, dot: &Value, fin: Option<Value>) -> R<Value> {
        {
            self.at = (c.pos, c.end);
            self.loc = None;
        }
        let first = &c.args[0];
        match first {
            Arg::Ident(_, name) => return self.call(name, &c.args[1..], dot, fin, c),
            Arg::Field(pos, fields) => {
                let invalid = !self.dot_typed;
                return self.field_chain(
                    dot.clone(),
                    fields,
                    &c.args[1..],
                    dot,
                    fin,
                    Site { span: (*pos, field_end(*pos, 0, fields)), invalid_nil: invalid },
                );
            }
            Arg::Var(pos, name, fields) if !fields.is_empty() => {
                let base = self.var(name)?;
                let invalid = self.var_invalid(name);
                return self.field_chain(
                    base,
                    fields,
                    &c.args[1..],
                    dot,
                    fin,
                    Site { span: (*pos, field_end(*pos, name.len(), fields)), invalid_nil: invalid },
                );
            }
            Arg::Pipe(pos, p, fields) if !fields.is_empty() => {
                let base = self.pipe(p, dot)?;
                {
                    self.at = (*pos, c.end);
                    self.loc = None;
                }
                return self.field_chain(
                    base,
                    fields,
                    &c.args[1..],
                    dot,
                    fin,
                    Site { span: (*pos, c.end), invalid_nil: true },
                );
            }
            _ => {}
        }
        if fin.is_some() {
            return Err(Raise::Msg(format!("can't give argument to non-function {}", self.src_of(c))));
        }
        self.operand(first, dot)
    }

    fn src_of(&self, c: &Cmd) -> String {
        self.file.text.get(c.pos..c.end).unwrap_or("").to_string()
    }

    /// Evaluates a single operand (not a function call with arguments).
    fn operand(&mut self, a: &Arg, dot: &Value) -> R<Value> {
        Ok(match a {
            Arg::Dot(_) => dot.clone(),
            Arg::Nil(_) => return Err(Raise::Msg("nil is not a command".into())),
            Arg::Bool(b) => Value::Bool(*b),
            Arg::Num(Num::Int(i)) => Value::Int(*i),
            Arg::Num(Num::Float(f)) => Value::Float(*f),
            Arg::Str(s) => Value::Str(s.clone().as_ref().into()),
            Arg::Field(pos, fields) => {
                let invalid = !self.dot_typed;
                self.field_chain(
                    dot.clone(),
                    fields,
                    &[],
                    dot,
                    None,
                    Site { span: (*pos, field_end(*pos, 0, fields)), invalid_nil: invalid },
                )?
            }
            Arg::Var(pos, name, fields) => {
                let base = self.var(name)?;
                if fields.is_empty() {
                    base
                } else {
                    let invalid = self.var_invalid(name);
                    self.field_chain(
                        base,
                        fields,
                        &[],
                        dot,
                        None,
                        Site { span: (*pos, field_end(*pos, name.len(), fields)), invalid_nil: invalid },
                    )?
                }
            }
            Arg::Pipe(pos, p, fields) => {
                let saved = self.at;
                let mark = self.vars.len();
                let base = self.pipe(p, dot)?;
                self.vars.truncate(mark);
                {
                    self.at = saved;
                    self.loc = None;
                }
                if fields.is_empty() {
                    base
                } else {
                    self.field_chain(base, fields, &[], dot, None, Site { span: (*pos, saved.1), invalid_nil: true })?
                }
            }
            Arg::Ident(_, name) => {
                let c = Cmd { pos: self.at.0, end: self.at.1, args: Vec::new() };
                self.call(name, &[], dot, None, &c)?
            }
        })
    }

    /// `.A.B.C args…`: walks maps and objects; the last element may be a method taking
    /// `args` (and the piped value).
    fn field_chain(
        &mut self,
        mut v: Value,
        fields: &[String],
        args: &[Arg],
        dot: &Value,
        fin: Option<Value>,
        site: Site,
    ) -> R<Value> {
        let (at, invalid_base) = (site.span, site.invalid_nil);
        // Go: a field of the invalid value (a nil that came out of a pipeline) is nothing,
        // not an error; a field of a nil found in a map is a nil pointer error.
        if invalid_base && matches!(v, Value::Nil) {
            return Ok(Value::Nil);
        }
        let n = fields.len();
        // Go locates a field chain at its second element.
        let go_loc = |s: &Self| -> Option<usize> {
            let text = s.file.text.get(at.0..at.1).unwrap_or("");
            let skip = if text.starts_with('$') { 1 } else { 2 };
            text.match_indices('.').nth(skip - 1).map(|(i, _)| at.0 + i).filter(|_| text.matches('.').count() >= skip)
        };
        for (i, f) in fields.iter().enumerate() {
            let last = i + 1 == n;
            let has_args = last && (!args.is_empty() || fin.is_some());
            v = match &v {
                Value::Map(m) => {
                    if has_args {
                        {
                            self.at = at;
                            self.loc = go_loc(self);
                        }
                        return Err(Raise::Msg(format!("{f} is not a method but has arguments")));
                    }
                    m.borrow().get(f.as_str()).cloned().unwrap_or(Value::Nil)
                }
                Value::Obj(o) => {
                    let mut argv = Vec::new();
                    if last {
                        for a in args {
                            argv.push(self.operand(a, dot)?);
                        }
                        if let Some(fv) = &fin {
                            argv.push(fv.clone());
                        }
                    }
                    {
                        self.at = at;
                        self.loc = go_loc(self);
                    }
                    o.field(f, argv, has_args).map_err(Raise::Msg)?
                }
                Value::Nil => {
                    {
                        self.at = at;
                        self.loc = go_loc(self);
                    }
                    return Err(Raise::Msg(format!("nil pointer evaluating interface {{}}.{f}")));
                }
                other => {
                    {
                        self.at = at;
                        self.loc = go_loc(self);
                    }
                    let _ = other;
                    return Err(Raise::Msg(format!("can't evaluate field {f} in type interface {{}}")));
                }
            };
        }
        if n == 0 && (!args.is_empty() || fin.is_some()) {
            return Err(Raise::Msg("can't give argument to non-function".into()));
        }
        Ok(v)
    }

    /// Calls function `name` with argument nodes `args` and the piped value `fin`.
    fn call(&mut self, name: &str, args: &[Arg], dot: &Value, fin: Option<Value>, c: &Cmd) -> R<Value> {
        // Short-circuiting builtins.
        if name == "and" || name == "or" {
            let total = args.len() + usize::from(fin.is_some());
            if total == 0 {
                return Err(Raise::Msg(format!("wrong number of args for {name}: want at least 1 got 0")));
            }
            let mut last = Value::Nil;
            for a in args {
                let v = self.operand(a, dot)?;
                let t = v.truthy();
                last = v;
                if (name == "and" && !t) || (name == "or" && t) {
                    return Ok(last);
                }
            }
            if let Some(f) = fin {
                last = f;
            }
            return Ok(last);
        }
        let Some(func) = funcs::lookup(name) else {
            return Err(Raise::Msg(format!("{name:?} is not a defined function")));
        };
        let total = args.len() + usize::from(fin.is_some());
        let fixed = func.params.len();
        if (func.variadic.is_none() && total != fixed) || (func.variadic.is_some() && total < fixed) {
            {
                self.at = (c.pos, c.end);
                self.loc = None;
            }
            return Err(Raise::Msg(if func.variadic.is_some() {
                format!("wrong number of args for {name}: want at least {fixed} got {total}")
            } else {
                format!("wrong number of args for {name}: want {fixed} got {total}")
            }));
        }
        let mut argv = Vec::with_capacity(total);
        for (i, a) in args.iter().enumerate() {
            let kind = if i < fixed { func.params[i] } else { func.variadic.unwrap_or(P::Any) };
            let v = self.arg(a, kind, dot)?;
            argv.push(v);
        }
        if let Some(f) = fin {
            let i = argv.len();
            let kind = if i < fixed { func.params[i] } else { func.variadic.unwrap_or(P::Any) };
            argv.push(check_kind(f, kind, true).map_err(Raise::Msg)?);
        }
        {
            self.at = (c.pos, c.end);
            self.loc = None;
        }
        if func.effect {
            self.effects += 1;
        }
        let r = match func.body {
            Body::Pure(f) => f(argv).map_err(Raise::from),
            Body::Executor(which) => self.run_function(which, argv),
        };
        r.map_err(|e| match e {
            Raise::Msg(m) => Raise::Msg(format!("error calling {name}: {m}")),
            other => other,
        })
    }

    /// Whether a key or certificate generator ran (its output holds tokens for the agent).
    pub fn generated(&self) -> bool {
        self.generated > 0
    }

    /// The functions that need the render they run in.
    fn run_function(&mut self, which: ExecFn, argv: Vec<Value>) -> R<Value> {
        let text = argv[0].as_str().unwrap_or("");
        match which {
            ExecFn::Include => Ok(Value::Str(self.include(text, argv[1].clone())?)),
            ExecFn::Generate(which) => {
                self.generated += 1;
                crate::helm::crypto::generate(which, self.generated - 1, &argv).map_err(Raise::Msg)
            }
            ExecFn::Tpl => {
                let name = match &argv[1] {
                    Value::Map(m) => match m.borrow().get("Template") {
                        Some(Value::Map(t)) => t.borrow().get("Name").and_then(|n| n.as_str().map(String::from)),
                        _ => None,
                    },
                    _ => None,
                };
                let Some(name) = name else {
                    return Err(Raise::Msg("cannot retrieve Template.Name from values inside tpl function".into()));
                };
                Ok(Value::str(self.tpl(&name, text, argv[1].clone())?))
            }
        }
    }

    /// The source span of an operand.
    fn arg_span(&self, a: &Arg) -> (usize, usize) {
        match a {
            Arg::Field(p, f) => (*p, field_end(*p, 0, f)),
            Arg::Var(p, n, f) => (*p, field_end(*p, n.len(), f)),
            Arg::Ident(p, n) => (*p, p + n.len()),
            Arg::Dot(p) | Arg::Nil(p) => (*p, p + 1),
            Arg::Pipe(p, _, _) => {
                let text = self.file.text.get(*p..).unwrap_or("");
                let mut depth = 0usize;
                let mut end = *p;
                for (i, c) in text.char_indices() {
                    match c {
                        '(' => depth += 1,
                        ')' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                end = p + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                (*p, end)
            }
            _ => self.at,
        }
    }

    /// Evaluates an argument for a parameter of `kind`, with Go's conversions of literals.
    fn arg(&mut self, a: &Arg, kind: P, dot: &Value) -> R<Value> {
        match (a, kind) {
            (Arg::Num(n), P::Str) => Err(Raise::Msg(format!("expected string; found {}", num_text(n)))),
            (Arg::Num(Num::Float(f)), P::Int) if f.fract() == 0.0 => Ok(Value::Int(*f as i64)),
            (Arg::Num(Num::Float(_)), P::Int) => Err(Raise::Msg("expected integer; found float".into())),
            (Arg::Num(Num::Int(i)), P::Float) => Ok(Value::Float(*i as f64)),
            (Arg::Num(Num::Int(i)), P::Int64) => Ok(Value::Int64(*i)),
            (Arg::Str(s), P::Int | P::Float | P::Int64) => Err(Raise::Msg(format!("expected integer; found {s:?}"))),
            (Arg::Str(s), P::Bool) => Err(Raise::Msg(format!("expected bool; found {s:?}"))),
            (Arg::Nil(_), P::Map | P::List | P::Any) => Ok(Value::Nil),
            (Arg::Nil(_), k) => Err(Raise::Msg(format!("cannot assign nil to {}", k.go_name()))),
            _ => {
                let v = self.operand(a, dot)?;
                let literal = matches!(a, Arg::Num(_) | Arg::Str(_) | Arg::Bool(_));
                check_kind(v, kind, literal).map_err(|m| {
                    let span = self.arg_span(a);
                    self.at = span;
                    self.loc = match a {
                        Arg::Field(_, f) if f.len() >= 2 => Some(span.0 + 1 + f[0].len()),
                        Arg::Var(p, n, f) if !f.is_empty() => Some(p + n.len()),
                        _ => None,
                    };
                    Raise::Msg(m)
                })
            }
        }
    }
}

/// Where a field chain is written, and whether its base is Go's invalid value.
struct Site {
    span: (usize, usize),
    invalid_nil: bool,
}

/// The end offset of a field chain written from `pos` (after a `$name` of `name_len`).
fn field_end(pos: usize, name_len: usize, fields: &[String]) -> usize {
    pos + name_len + fields.iter().map(|f| f.len() + 1).sum::<usize>()
}

fn num_text(n: &Num) -> String {
    match n {
        Num::Int(i) => i.to_string(),
        Num::Float(f) => crate::helm::value::go_float(*f),
    }
}

/// Go's assignability of a value to a parameter type.
fn check_kind(v: Value, kind: P, _literal: bool) -> Result<Value, String> {
    let ok = matches!(
        (&v, kind),
        (_, P::Any)
            | (Value::Str(_), P::Str)
            | (Value::Int(_), P::Int)
            | (Value::Int64(_), P::Int64)
            | (Value::Float(_), P::Float)
            | (Value::Bool(_), P::Bool)
            | (Value::Map(_) | Value::Nil, P::Map)
            | (Value::List(_) | Value::Nil, P::List)
    );
    if ok {
        return Ok(v);
    }
    if matches!(v, Value::Nil) {
        return Err(format!("invalid value; expected {}", kind.go_name()));
    }
    Err(format!("wrong type for value; expected {}; got {}", kind.go_name(), v.type_name()))
}

/// Prints a pipeline's value the way text/template does: `<no value>` for nil.
fn print_value(out: &mut String, v: &Value) -> Result<(), String> {
    match v {
        Value::Nil => out.push_str("<no value>"),
        Value::Str(s) => out.push_str(s),
        other => crate::helm::value::write_go(out, other),
    }
    Ok(())
}

/// Builds a map value from pairs (for tests and Helm's objects).
pub fn map_of(pairs: Vec<(&str, Value)>) -> Value {
    Value::map(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<BTreeMap<_, _>>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helm::funcs::is_func;

    /// Runs template `main` (with `others` beside it) on `data` (JSON).
    fn run_with(main: &str, others: &[(&str, &str)], data: serde_json::Value) -> Result<String, ExecError> {
        let mut set = TemplateSet::default();
        for (name, text) in others.iter().chain([&("main", main)]) {
            set.add(Arc::new(SourceText { name: name.to_string(), text: text.to_string() }), &is_func).expect("parses");
        }
        Exec::new(&set).execute("main", Value::from_json(&data))
    }

    fn run(main: &str, data: serde_json::Value) -> String {
        run_with(main, &[], data).unwrap_or_else(|e| panic!("{main}: {e}"))
    }

    #[test]
    fn pipelines_functions_and_trim_markers() {
        let data = serde_json::json!({"a": "x", "l": [1, 2], "n": 3});
        assert_eq!(run("{{ .a | upper }}-{{ len .l }}", data.clone()), "X-2");
        assert_eq!(run("a  {{- .n -}}  b", data.clone()), "a3b");
        // Numbers from values are float64; literals are int.
        assert_eq!(run("{{ typeOf .n }} {{ typeOf 3 }} {{ 0x1p4 }}", data), "float64 int 16");
    }

    #[test]
    fn range_with_and_variables() {
        let data = serde_json::json!({"m": {"b": 2, "a": 1}, "e": []});
        assert_eq!(run("{{ range $k, $v := .m }}{{ $k }}={{ $v }};{{ end }}", data.clone()), "a=1;b=2;");
        assert_eq!(run("{{ range .e }}x{{ else }}empty{{ end }}", data.clone()), "empty");
        assert_eq!(run("{{ with .m.a }}{{ . }}{{ end }}{{ with .missing }}no{{ else }}none{{ end }}", data), "1none");
    }

    #[test]
    fn include_sees_a_map_changed_between_calls() {
        let t = ("t", "{{ define \"show\" }}{{ .k | default \"none\" }}{{ end }}");
        let out = run_with(
            "{{ $d := dict }}{{ include \"show\" $d }} {{ $_ := set $d \"k\" \"v\" }}{{ include \"show\" $d }}",
            &[t],
            serde_json::json!({}),
        );
        assert_eq!(out.expect("runs"), "none v");
    }

    #[test]
    fn tpl_runs_text_with_the_caller_template_name() {
        let data = serde_json::json!({"Template": {"Name": "main", "BasePath": "x"}, "who": "fleet"});
        assert_eq!(run("{{ tpl \"hello {{ .who }}\" . }}", data), "hello fleet");
        let e = run_with("{{ tpl \"x\" .v }}", &[], serde_json::json!({"v": {}})).expect_err("no Template.Name");
        assert_eq!(e.message, "error calling tpl: cannot retrieve Template.Name from values inside tpl function");
    }

    #[test]
    fn errors_name_where_and_why() {
        let e = run_with("ok\n{{ fail \"boom\" }}", &[], serde_json::json!({})).expect_err("fails");
        assert!(e.user);
        assert_eq!(e.to_string(), "execution error at (main:2:3): boom");
        let e = run_with("{{ include \"missing\" . }}", &[], serde_json::json!({})).expect_err("no such template");
        assert!(e.message.contains("no template \"missing\""), "{}", e.message);
        let loop_ = ("t", "{{ define \"r\" }}{{ include \"r\" . }}{{ end }}");
        let e = run_with("{{ include \"r\" . }}", &[loop_], serde_json::json!({})).expect_err("recursion is bounded");
        assert!(e.to_string().contains("rendering template has a nested reference name: r"), "{e}");
    }
}
