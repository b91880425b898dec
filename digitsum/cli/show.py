"""``digitsum show``: a recipe validated and printed resolved."""

from . import RecipeArg, SetOpt, app


@app.command()
def show(recipe: RecipeArg, set_: SetOpt = None) -> None:
    """Validate a recipe and print it resolved (extends, overrides and defaults applied)."""
    import digitsum

    print(digitsum.load_recipe(recipe, set_ or []).to_toml(), end="")
