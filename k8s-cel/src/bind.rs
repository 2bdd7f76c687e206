//! `cel.bind(name, init, expr)` (cel-go's `ext.Bindings`, in
//! kube-apiserver's base environment): `expr` evaluated with `name` bound
//! to `init`, evaluated once. Expanded at parse time, as cel-go expands it,
//! into a comprehension over an empty list whose accumulator is the
//! variable.

use cel::{
    DeclarationError, Env,
    common::ast::{ComprehensionExpr, Expr, IdedExpr, ListExpr, LiteralValue},
    parser::{Macro, MacroExprHelper, ParseError},
};

/// Registers the `cel.bind` macro.
pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_macro(Macro::receiver("bind", 3, expand))
}

fn expand(
    helper: &mut MacroExprHelper<'_>,
    target: &mut Option<IdedExpr>,
    args: &mut Vec<IdedExpr>,
) -> Result<Option<IdedExpr>, ParseError> {
    // Only `cel.bind`: a `bind` method of anything else is left alone.
    if !matches!(target.as_ref().map(|t| &t.expr), Some(Expr::Ident(name)) if name == "cel") {
        return Ok(None);
    }
    let (Some(result), Some(init), Some(var)) = (args.pop(), args.pop(), args.pop()) else {
        return Ok(None);
    };
    let Expr::Ident(name) = var.expr else {
        return Err(helper.new_error(
            var.id,
            "cel.bind() variable name must be a simple identifier",
        ));
    };
    let bind = ComprehensionExpr {
        iter_range: helper.next_expr(Expr::List(ListExpr::new(Vec::new()))),
        iter_var: "#unused".to_owned(),
        iter_var2: None,
        accu_var: name.clone(),
        accu_init: init,
        loop_cond: helper.next_expr(Expr::Literal(LiteralValue::Boolean(false.into()))),
        loop_step: helper.next_expr(Expr::Ident(name)),
        result,
    };
    Ok(Some(helper.next_expr(Expr::Comprehension(Box::new(bind)))))
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn bind_names_a_value_once() {
        holds("cel.bind(x, [1, 2, 3], x.size() == 3 && x[0] == 1)");
        holds("cel.bind(a, 'hello', cel.bind(b, a + ' world', b.size() == 11))");
        holds("cel.bind(valid, ['a', 'b'], ['a'].all(n, n in valid))");
        fails("cel.bind(1, 2, 3)", "simple identifier");
    }
}
