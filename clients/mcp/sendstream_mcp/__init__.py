"""sendstream's MCP server: `sendstream-mcp` (stdio; `--http PORT` for streamable HTTP)."""
