//! Go `text/template`: parsing ([`parse`]) and execution ([`exec`]).

pub mod exec;
pub mod parse;
