"""The agent's tools: definitions and schemas, both call formats, the edit algorithm, execution.

``execute`` runs against ``FakeRuntime``, an in-memory double of the ``Runtime`` protocol (a dict of
files and scripted command observations); the Docker runtime itself is tested with the environments.
"""

from __future__ import annotations

import json
import posixpath

import pytest

from envs.runtime import EnvironmentDied, Observation
from tools.calls import FormatError, ToolCall, parse_cwm, parse_openai, render_cwm
from tools.definitions import TOOLS, cwm_block, cwm_tool_docs, openai_tools
from tools.execute import MAX_EDIT_BYTES, apply_edit, execute

# --- definitions -------------------------------------------------------------------------------------


def test_the_tools_are_cwms_set_in_order() -> None:
    assert [tool.name for tool in TOOLS] == ["bash", "edit", "create", "submit"]
    assert [[p.name for p in tool.parameters] for tool in TOOLS] == [
        ["command"],
        ["path", "old_str", "new_str"],
        ["path", "content"],
        [],
    ]


def test_openai_schema_is_a_strict_json_schema_object_per_tool() -> None:
    schemas = json.loads(json.dumps(openai_tools()))  # plain JSON all the way down
    assert [schema["function"]["name"] for schema in schemas] == [tool.name for tool in TOOLS]
    for schema, tool in zip(schemas, TOOLS, strict=True):
        assert schema["type"] == "function"
        function = schema["function"]
        assert function["description"] == tool.description
        parameters = function["parameters"]
        assert parameters["type"] == "object"
        assert parameters["additionalProperties"] is False
        assert list(parameters["properties"]) == [p.name for p in tool.parameters]
        assert parameters["required"] == [p.name for p in tool.parameters]
        for parameter in tool.parameters:
            assert parameters["properties"][parameter.name] == {
                "type": "string",
                "description": parameter.description,
            }


def test_cwm_docs_document_every_tool_with_its_layout() -> None:
    docs = cwm_tool_docs()
    for tool in TOOLS:
        assert f"## {tool.name}\n{tool.description}" in docs
        assert cwm_block(tool.name, tool.cwm_body) in docs
        assert tool.cwm_notes in docs
        for parameter in tool.parameters:
            assert f"[{parameter.name}]" in docs


@pytest.mark.parametrize("tool", TOOLS, ids=lambda tool: tool.name)
def test_each_documented_cwm_layout_parses_to_exactly_the_tools_parameters(tool) -> None:
    call = parse_cwm(cwm_block(tool.name, tool.cwm_body))
    assert call.name == tool.name
    assert list(call.arguments) == [p.name for p in tool.parameters]
    for name, value in call.arguments.items():
        assert value.rstrip("\n") == f"[{name}]"


# --- parse_cwm ---------------------------------------------------------------------------------------


def test_bash_block_after_a_thought_keeps_the_command_verbatim() -> None:
    text = "I should look around first.\n\n<tool: bash>\n  ls -la\ncd src && grep -n foo *.py  \n</tool>"
    assert parse_cwm(text) == ToolCall("bash", {"command": "  ls -la\ncd src && grep -n foo *.py  "})


@pytest.mark.parametrize("tag", ["<tool:bash>", "<tool:  bash >", "Now: <tool: bash>"])
def test_opening_tag_spacing_and_position_are_lenient(tag: str) -> None:
    assert parse_cwm(f"{tag}\nls\n</tool>") == ToolCall("bash", {"command": "ls"})


def test_edit_block() -> None:
    text = (
        "Fix the off-by-one.\n<tool: edit>\nsrc/my pkg/mod.py\n<<<<<<< SEARCH\n"
        "    for i in range(n + 1):\n\n        total += i\n=======\n    for i in range(n):\n"
        "        total += i\n>>>>>>> REPLACE\n</tool>\n"
    )
    assert parse_cwm(text) == ToolCall(
        "edit",
        {
            "path": "src/my pkg/mod.py",
            "old_str": "    for i in range(n + 1):\n\n        total += i",
            "new_str": "    for i in range(n):\n        total += i",
        },
    )


@pytest.mark.parametrize("replace", ["=======\n>>>>>>> REPLACE", "=======\n\n>>>>>>> REPLACE"])
def test_edit_with_an_empty_replace_section_deletes(replace: str) -> None:
    call = parse_cwm(f"<tool: edit>\na.py\n<<<<<<< SEARCH\nx = 1\n{replace}\n</tool>")
    assert call.arguments == {"path": "a.py", "old_str": "x = 1", "new_str": ""}


@pytest.mark.parametrize(
    ("body", "content"),
    [
        ("a.py\nprint(1)\nprint(2)", "print(1)\nprint(2)\n"),
        ("a.py\nprint(1)\n", "print(1)\n\n"),  # a blank line before </tool> is a blank last line
        ("a.py", ""),
        ("a.py\n", ""),
        ("  dir with space/b.txt  \nx", "x\n"),
    ],
)
def test_create_content_is_the_body_after_the_path_plus_a_final_newline(body: str, content: str) -> None:
    call = parse_cwm(f"<tool: create>\n{body}\n</tool>")
    assert call.arguments["content"] == content
    assert call.arguments["path"] in ("a.py", "dir with space/b.txt")


def test_a_body_may_hold_tags_except_a_line_starting_with_the_closing_tag() -> None:
    body = 'docs/format.md\nEnd calls with "</tool>".\n<tool: bash>\nls'
    call = parse_cwm(f"<tool: create>\n{body}\n</tool>")
    assert call.arguments["content"] == 'End calls with "</tool>".\n<tool: bash>\nls\n'


@pytest.mark.parametrize("text", ["<tool: submit>\n</tool>", "Done.\n<tool: submit>\n\n</tool>\n"])
def test_submit_block_with_or_without_an_empty_line(text: str) -> None:
    assert parse_cwm(text) == ToolCall("submit", {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "I think it is fixed.",
            ["no tool call found", "exactly one block like\n<tool: bash>\nls -la\n</tool>"],
        ),
        (
            "<tool: bash>\nls\n</tool>\n<tool: submit>\n</tool>",
            ["found 2 tool calls (bash, submit)", "only one tool call per message is executed"],
        ),
        ("<tool: bash>\nls", ["unbalanced tool tags: 1 opening", "and 0 closing"]),
        ("ls\n</tool>", ["unbalanced tool tags: 0 opening", "and 1 closing"]),
        (
            "<tool: create>\na.md\nx\n</tool>\ny\n</tool>",
            ["1 opening", "and 2 closing", "may start with `</tool>`"],
        ),
        ("<tool: bash> ls\n</tool>", ["`<tool: bash>` must be followed by a newline"]),
        ("<tool: python>\nprint(1)\n</tool>", ["unknown tool 'python'", "bash, edit, create, submit"]),
        ("<tool: bash>\n  \n</tool>", ["empty bash command", "<tool: bash>\n[command]\n</tool>"]),
        ("<tool: submit>\nnow\n</tool>", ["submit takes no arguments"]),
        ("<tool: create>\n\nx = 1\n</tool>", ["missing path", "<tool: create>\n[path]\n[content]\n</tool>"]),
        ("<tool: edit>\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n</tool>", ["missing path"]),
    ],
)
def test_parse_cwm_errors_say_what_is_wrong(text: str, expected: list[str]) -> None:
    with pytest.raises(FormatError) as raised:
        parse_cwm(text)
    for fragment in expected:
        assert fragment in str(raised.value)


EDIT_LAYOUT = "<<<<<<< SEARCH\n[old_str]\n=======\n[new_str]\n>>>>>>> REPLACE"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            "a.py\n<<<<<<< SEARCH\nx\n>>>>>>> REPLACE",
            "found 1 `<<<<<<< SEARCH`, 0 `=======` and 1 `>>>>>>> REPLACE`",
        ),
        (
            "a.py\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n"
            "<<<<<<< SEARCH\nz\n=======\nw\n>>>>>>> REPLACE",
            "found 2 `<<<<<<< SEARCH`, 2 `=======` and 2 `>>>>>>> REPLACE`",
        ),
        ("a.py\nb.py\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE", "the path line must be followed by"),
        ("a.py\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\ntrailing", "as the last line"),
        ("a.py\n<<<<<<< SEARCH\n=======\ny\n>>>>>>> REPLACE", "the SEARCH section is empty"),
    ],
)
def test_malformed_edit_shows_the_reason_and_the_layout(body: str, reason: str) -> None:
    with pytest.raises(FormatError) as raised:
        parse_cwm(f"<tool: edit>\n{body}\n</tool>")
    assert str(raised.value).startswith("malformed edit: ")
    assert reason in str(raised.value)
    assert EDIT_LAYOUT in str(raised.value)


# --- render_cwm ----------------------------------------------------------------------------------------

ROUND_TRIP = [
    ToolCall("bash", {"command": "ls -la"}),
    ToolCall("bash", {"command": "\necho '</tool>' && echo '<tool: bash>'\n\n"}),
    ToolCall("edit", {"path": "dir with space/f.py", "old_str": "a\n", "new_str": ""}),
    ToolCall("edit", {"path": "f.py", "old_str": "x", "new_str": "\n"}),
    ToolCall(
        "edit", {"path": "/abs/f.py", "old_str": "    indented\n\n", "new_str": "<tool: submit>\n</tool >"}
    ),
    ToolCall("create", {"path": "empty.txt", "content": ""}),
    ToolCall("create", {"path": "a.py", "content": "print(1)\n"}),
    ToolCall("create", {"path": "a.py", "content": "ends with blank lines\n\n\n"}),
    ToolCall("create", {"path": "crlf.txt", "content": "one\r\ntwo\r\n"}),
    ToolCall("create", {"path": "ünï.md", "content": "héllo ✓ a</tool>\n"}),
    ToolCall("submit", {}),
]


@pytest.mark.parametrize("call", ROUND_TRIP, ids=lambda call: call.name)
def test_render_cwm_is_the_inverse_of_parse_cwm(call: ToolCall) -> None:
    text = render_cwm(call)
    assert parse_cwm(text) == call
    assert render_cwm(parse_cwm(text)) == text


def test_render_cwm_layouts() -> None:
    assert render_cwm(ToolCall("submit", {})) == "<tool: submit>\n</tool>"
    assert render_cwm(ToolCall("create", {"path": "a", "content": "x\n"})) == "<tool: create>\na\nx\n</tool>"
    assert (
        render_cwm(ToolCall("edit", {"path": "a", "old_str": "x", "new_str": ""}))
        == "<tool: edit>\na\n<<<<<<< SEARCH\nx\n=======\n>>>>>>> REPLACE\n</tool>"
    )


@pytest.mark.parametrize(
    "call",
    [
        ToolCall("create", {"path": "a.txt", "content": "no final newline"}),
        ToolCall("create", {"path": "a.txt", "content": "\n"}),
        ToolCall("create", {"path": "two\nlines", "content": ""}),
        ToolCall("create", {"path": " padded", "content": ""}),
        ToolCall("bash", {"command": "cat <<EOF\n</tool>\nEOF"}),
        ToolCall("bash", {"command": "  "}),
        ToolCall("edit", {"path": "a", "old_str": "a\n=======\nb", "new_str": "c"}),
        ToolCall("edit", {"path": "a", "old_str": "", "new_str": "c"}),
        ToolCall("edit", {"path": "a", "old_str": "x"}),
        ToolCall("python", {}),
    ],
)
def test_render_cwm_refuses_what_the_format_cannot_express(call: ToolCall) -> None:
    with pytest.raises(ValueError):
        render_cwm(call)


# --- parse_openai ----------------------------------------------------------------------------------------


def openai_call(name: str, arguments: str, call_id: str = "call_1") -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_parse_openai_one_call() -> None:
    arguments = json.dumps({"path": "a b.py", "old_str": "x", "new_str": "y"})
    assert parse_openai([openai_call("edit", arguments, "call_7")]) == ToolCall(
        "edit", {"path": "a b.py", "old_str": "x", "new_str": "y"}, "call_7"
    )


@pytest.mark.parametrize("arguments", ["", "{}", " "])
def test_parse_openai_no_arguments(arguments: str) -> None:
    assert parse_openai([openai_call("submit", arguments)]) == ToolCall("submit", {}, "call_1")


@pytest.mark.parametrize(
    ("tool_calls", "expected"),
    [
        ([], ["no tool call found"]),
        (
            [openai_call("bash", '{"command": "ls"}'), openai_call("submit", "{}", "call_2")],
            ["2 tool calls (bash, submit)", "none was executed", "only one tool call per turn is executed"],
        ),
        (
            [openai_call("bash", '{"command": "ls"')],
            ["not valid JSON (Expecting ',' delimiter: line 1 column 17 (char 16))", '{"command": "..."}'],
        ),
        ([openai_call("python", "{}")], ["unknown tool 'python'", "bash, edit, create, submit"]),
        ([openai_call("bash", '["ls"]')], ["must be a JSON object, not list", "bash(command)"]),
        (
            [openai_call("edit", '{"path": "a", "old_str": 1, "force": true}')],
            [
                "missing 'new_str'; unexpected 'force'; 'old_str' must be a string, not int",
                "The signature is edit(path, old_str, new_str)",
            ],
        ),
    ],
)
def test_parse_openai_errors(tool_calls: list[dict], expected: list[str]) -> None:
    with pytest.raises(FormatError) as raised:
        parse_openai(tool_calls)
    for fragment in expected:
        assert fragment in str(raised.value)


# --- apply_edit ------------------------------------------------------------------------------------------

SOURCE = "def total(n):\n    s = 0\n    for i in range(n + 1):\n        s += i\n    return s\n"


def test_edit_replaces_the_single_exact_match_and_shows_it_numbered() -> None:
    outcome = apply_edit(SOURCE, "range(n + 1)", "range(n)")
    assert outcome.text == SOURCE.replace("range(n + 1)", "range(n)")
    assert outcome.message.startswith("the new text is at lines 3-3 of 5:\n")
    assert "     3\t    for i in range(n):" in outcome.message


def test_edit_snippet_shows_four_lines_each_side() -> None:
    text = "".join(f"line {n}\n" for n in range(1, 21))
    outcome = apply_edit(text, "line 10\n", "ten\nTEN\n")
    assert outcome.message.startswith("the new text is at lines 10-11 of 21:\n")
    numbers = [int(line.split("\t")[0]) for line in outcome.message.splitlines()[1:]]
    assert numbers == list(range(6, 16))


def test_edit_deletion() -> None:
    outcome = apply_edit(SOURCE, "    s = 0\n", "")
    assert outcome.text == SOURCE.replace("    s = 0\n", "")
    assert outcome.message.startswith("the text was deleted at line 2 of 4:")


def test_edit_not_found_because_of_indentation_says_so() -> None:
    outcome = apply_edit(SOURCE, "for i in range(n + 1):\n    s += i", "x")
    assert outcome.text is None
    assert "matches lines 3-4 only when whitespace is ignored: the indentation" in outcome.message
    assert "     4\t        s += i" in outcome.message


def test_edit_not_found_because_of_spacing_says_so() -> None:
    outcome = apply_edit(SOURCE, "range(n+1)", "range(n)")
    assert outcome.text is None
    assert "matches lines 3-3 only when whitespace is ignored: the spacing differs" in outcome.message


def test_edit_not_found_lists_the_closest_lines() -> None:
    outcome = apply_edit(SOURCE, "    for j in range(n + 1):", "x")
    assert outcome.text is None
    assert "not found" in outcome.message
    assert "lines 3-3 (96% similar):\n     3\t    for i in range(n + 1):" in outcome.message


def test_edit_not_found_and_nothing_similar() -> None:
    outcome = apply_edit(SOURCE, "class Unrelated(Base):", "x")
    assert outcome.text is None
    assert "No similar lines either" in outcome.message


def test_edit_several_matches_gives_each_line() -> None:
    outcome = apply_edit("x = 1\ny = 2\nx = 1\n\nx = 1\n", "x = 1", "x = 2")
    assert outcome.text is None
    assert "occurs 3 times, starting at lines 1, 3, 5" in outcome.message


def test_edit_overlapping_matches_are_ambiguous() -> None:
    assert "occurs 2 times" in apply_edit("aaa\n", "aa", "b").message


@pytest.mark.parametrize(("old", "new"), [("", "x"), ("s = 0", "s = 0")])
def test_edit_refuses_an_empty_or_unchanged_old_str(old: str, new: str) -> None:
    outcome = apply_edit(SOURCE, old, new)
    assert outcome.text is None
    assert "old_str" in outcome.message


def test_edit_keeps_crlf_line_endings() -> None:
    text = "a = 1\r\nb = 2\r\nc = 3\r\n"
    outcome = apply_edit(text, "a = 1\nb = 2\n", "a = 1\nb = 20\nb2 = 3\n")
    assert outcome.text == "a = 1\r\nb = 20\r\nb2 = 3\r\nc = 3\r\n"
    assert "\r" not in outcome.message


def test_edit_keeps_a_missing_final_newline_and_unicode() -> None:
    assert apply_edit("naïve = '✓'\nend", "'✓'", "'✗'").text == "naïve = '✗'\nend"


# --- execute ---------------------------------------------------------------------------------------------


class FakeRuntime:
    """An in-memory ``Runtime``: files in a dict keyed by normalized absolute path, scripted ``run``."""

    workdir = "/repo"

    def __init__(
        self,
        files: dict[str, bytes] | None = None,
        observations: list[Observation] | None = None,
        patch: str = "",
    ) -> None:
        self.files = dict(files or {})
        self.observations = list(observations or [])
        self.patch = patch
        self.commands: list[tuple[str, float | None]] = []
        self.bases: list[str] = []

    def _check(self, path: str) -> None:
        assert posixpath.isabs(path) and posixpath.normpath(path) == path, path

    def _is_dir(self, path: str) -> bool:
        return any(name.startswith(path + "/") for name in self.files)

    def run(self, command: str, timeout: float | None = None) -> Observation:
        self.commands.append((command, timeout))
        return self.observations.pop(0)

    def read_file(self, path: str) -> bytes:
        self._check(path)
        if self._is_dir(path):
            raise IsADirectoryError(path)
        if path not in self.files:
            raise FileNotFoundError(path)
        return self.files[path]

    def write_file(self, path: str, content: bytes) -> None:
        self._check(path)
        self.files[path] = content

    def exists(self, path: str) -> bool:
        self._check(path)
        return path in self.files or self._is_dir(path)

    def diff(self, base: str = "HEAD") -> str:
        self.bases.append(base)
        return self.patch

    def close(self) -> None:
        pass


def observation(output: str, exit_code: int | None = 0, **extra) -> Observation:
    return Observation(output=output, exit_code=exit_code, duration=30.2, **extra)


def bash(command: str) -> ToolCall:
    return ToolCall("bash", {"command": command})


def test_bash_output_ends_with_the_exit_code_and_passes_the_timeout() -> None:
    runtime = FakeRuntime(observations=[observation("hello\n"), observation("boom", 2), observation("")])
    assert execute(bash("echo hello"), runtime, timeout=12.5).output == "hello\n[exit code 0]"
    failed = execute(bash("false"), runtime)
    assert (failed.output, failed.ok) == ("boom\n[exit code 2]", False)
    assert execute(bash("true"), runtime).output == "[exit code 0]"
    assert runtime.commands == [("echo hello", 12.5), ("false", None), ("true", None)]


def test_bash_timeout_elision_and_note_are_stated() -> None:
    runtime = FakeRuntime(
        observations=[
            observation("partial", None, timed_out=True, elided=1234, note="the shell was restarted")
        ]
    )
    result = execute(bash("sleep 100"), runtime)
    assert not result.ok
    assert result.output == (
        "partial\n[timed out after 30 seconds: the command was killed]\n"
        "[1234 bytes elided from the middle of the output]\n[the shell was restarted]"
    )


def test_bash_refuses_an_empty_command_without_running_it() -> None:
    runtime = FakeRuntime()
    result = execute(bash(" \n"), runtime)
    assert not result.ok and "empty" in result.output
    assert runtime.commands == []


@pytest.mark.parametrize(
    ("path", "stored"),
    [
        ("src/my module.py", "/repo/src/my module.py"),
        ("./src/../src/my module.py", "/repo/src/my module.py"),
        ("../outside/f.py", "/outside/f.py"),
        ("/etc/app/conf.py", "/etc/app/conf.py"),
    ],
)
def test_edit_resolves_paths_against_the_workdir(path: str, stored: str) -> None:
    runtime = FakeRuntime({stored: SOURCE.encode()})
    result = execute(ToolCall("edit", {"path": path, "old_str": "s = 0", "new_str": "s = 1"}), runtime)
    assert result.ok, result.output
    assert result.output.startswith(f"Edited {path}: the new text is at lines 2-2 of 5:")
    assert runtime.files[stored] == SOURCE.replace("s = 0", "s = 1").encode()


def test_edit_writes_utf8_and_keeps_crlf_bytes() -> None:
    runtime = FakeRuntime({"/repo/a.txt": "héllo\r\nwörld\r\n".encode()})
    result = execute(ToolCall("edit", {"path": "a.txt", "old_str": "wörld\n", "new_str": "✓\n"}), runtime)
    assert result.ok
    assert runtime.files["/repo/a.txt"] == "héllo\r\n✓\r\n".encode()


@pytest.mark.parametrize(
    ("files", "path", "expected"),
    [
        ({}, "missing.py", "missing.py does not exist: to make a new file, use create."),
        ({"/repo/pkg/a.py": b"x"}, "pkg", "pkg is a directory"),
        (
            {"/repo/logo.png": b"\x89PNG\r\n\x1a\n\xff\xfe"},
            "logo.png",
            "binary file (not UTF-8 text): use bash",
        ),
        ({"/repo/big.txt": b"x" * (MAX_EDIT_BYTES + 1)}, "big.txt", "big.txt is 5.0 MB, too large for edit"),
        ({"/repo/a.py": SOURCE.encode()}, "a.py", "a.py was not changed: old_str was not found"),
        ({}, "pkg/", "edit needs the path of a file, not 'pkg/'"),
    ],
)
def test_edit_refusals_leave_files_alone(files: dict[str, bytes], path: str, expected: str) -> None:
    runtime = FakeRuntime(files)
    result = execute(ToolCall("edit", {"path": path, "old_str": "xyz", "new_str": "abc"}), runtime)
    assert not result.ok and not result.submitted
    assert expected in result.output
    assert runtime.files == files


def test_create_writes_a_new_file() -> None:
    runtime = FakeRuntime()
    result = execute(
        ToolCall("create", {"path": "new dir/../pkg/ünï.py", "content": "a = 1\nb = 'é'\n"}), runtime
    )
    assert (result.ok, result.output) == (True, "Created new dir/../pkg/ünï.py (2 lines).")
    assert runtime.files == {"/repo/pkg/ünï.py": "a = 1\nb = 'é'\n".encode()}


def test_create_refuses_an_existing_path() -> None:
    runtime = FakeRuntime({"/repo/a.py": b"old\n", "/repo/pkg/b.py": b""})
    for path in ("a.py", "pkg"):
        result = execute(ToolCall("create", {"path": path, "content": "new\n"}), runtime)
        assert not result.ok
        assert result.output == f"{path} already exists: change it with edit (create only makes new files)."
    assert runtime.files == {"/repo/a.py": b"old\n", "/repo/pkg/b.py": b""}


PATCH = """\
diff --git a/my file.py b/my file.py
index 7898192..422c2b7 100644
--- a/my file.py\t
+++ b/my file.py\t
@@ -1 +1,2 @@
 a
+b
diff --git a/new.py b/new.py
new file mode 100644
index 0000000..b680253
--- /dev/null
+++ b/new.py
@@ -0,0 +1 @@
+z
diff --git a/old.py b/old.py
deleted file mode 100644
index 975fbec..0000000
--- a/old.py
+++ /dev/null
@@ -1 +0,0 @@
-y
"""


def test_submit_returns_the_patch_and_names_the_files() -> None:
    runtime = FakeRuntime(patch=PATCH)
    result = execute(ToolCall("submit", {}), runtime, base="abc123")
    assert (result.ok, result.submitted, result.patch) == (True, True, PATCH)
    assert (
        result.output == "Submitted a patch changing 3 file(s): my file.py, new.py (added), old.py (deleted)."
    )
    assert runtime.bases == ["abc123"]


def test_submit_without_changes_is_refused_not_an_end() -> None:
    result = execute(ToolCall("submit", {}), FakeRuntime(patch="\n"))
    assert (result.ok, result.submitted, result.patch) == (False, False, None)
    assert result.output.startswith("No changes to submit:")


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (ToolCall("python", {"code": "1"}), "unknown tool 'python'"),
        (ToolCall("edit", {"path": "a.py"}), "missing 'old_str'; missing 'new_str'"),
    ],
)
def test_execute_turns_invalid_calls_into_refusals(call: ToolCall, expected: str) -> None:
    result = execute(call, FakeRuntime())
    assert not result.ok and expected in result.output


def _gone(*_: object) -> Observation:
    raise EnvironmentDied("the container went away")


class DeadRuntime(FakeRuntime):
    """Every call into the environment finds it gone."""

    run = read_file = write_file = exists = diff = _gone


@pytest.mark.parametrize(
    "call",
    [
        bash("ls"),
        ToolCall("edit", {"path": "a", "old_str": "x", "new_str": "y"}),
        ToolCall("create", {"path": "a", "content": ""}),
        ToolCall("submit", {}),
    ],
    ids=lambda call: call.name,
)
def test_a_dead_environment_propagates(call: ToolCall) -> None:
    with pytest.raises(EnvironmentDied):
        execute(call, DeadRuntime())
