pub(crate) mod ast;
pub(crate) mod attr;
pub(crate) mod backend;
pub(crate) mod check;
pub(crate) mod ctxt;
pub(crate) mod symbol;
pub(crate) mod types;

pub(crate) use self::ctxt::Ctxt;
