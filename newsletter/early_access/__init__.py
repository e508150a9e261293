"""Early-access sales: the personal link's window, the code the store checks, the page and API route."""
