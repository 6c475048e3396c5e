package io.nbdtail.tools.online;

import com.fasterxml.jackson.databind.JsonNode;
import io.nbdtail.volume.Sizes;
import picocli.CommandLine.Model.CommandSpec;

import java.io.Console;
import java.io.PrintWriter;
import java.time.Duration;
import java.time.Instant;
import java.time.format.DateTimeParseException;
import java.util.Set;

/**
 * {@code --wait} for a long operation: polls {@code GET /v1/operations/{id}} until it is over, showing its
 * progress. On a terminal that is one line redrawn with {@code \r}, with a bar; otherwise (a pipe, a log, a
 * dumb terminal) a plain line every few seconds and one at the end:
 * {@code scrub vol1: 42% 420 MiB/1.0 GiB 85 MiB/s eta 7s}.
 */
final class OperationWait {
    /** How often to ask the server. */
    static final Duration POLL = Duration.ofMillis(500);
    /** How often to print a plain progress line. */
    static final Duration PRINT = Duration.ofSeconds(2);

    private static final Set<String> OVER = Set.of("succeeded", "failed", "cancelled");
    private static final int BAR = 24;

    private final ApiClient api;
    private final PrintWriter out;
    private final boolean terminal;
    private final boolean quiet;
    private final Duration poll;
    private final Duration print;
    /** Length of the last bar drawn, to blank out what a shorter one leaves. */
    private int drawn;

    OperationWait(final ApiClient api, final PrintWriter out, final boolean terminal, final boolean quiet,
                  final Duration poll, final Duration print) {
        this.api = api;
        this.out = out;
        this.terminal = terminal;
        this.quiet = quiet;
        this.poll = poll;
        this.print = print;
    }

    /** For a command: progress on its output unless {@code --json}, a bar if that is a terminal. */
    static OperationWait of(final CommandSpec spec, final ApiClient api, final boolean json) {
        return new OperationWait(api, spec.commandLine().getOut(), terminal(), json, POLL, PRINT);
    }

    /** Whether a person watches: a console that is a terminal, and not a dumb one. */
    static boolean terminal() {
        final Console console = System.console();
        return console != null && console.isTerminal() && !"dumb".equals(System.getenv("TERM"));
    }

    static boolean over(final JsonNode operation) {
        return OVER.contains(operation.path("state").asText());
    }

    /** Waits until {@code operation} is over; returns its last state. */
    JsonNode await(final JsonNode operation) throws ApiException {
        final String id = operation.path("id").asText();
        JsonNode current = operation;
        long lastPrint = 0;
        boolean printed = false;
        while (true) {
            final boolean over = over(current);
            if (!quiet) {
                if (terminal) {
                    draw(current, over);
                } else if (over || !printed || System.nanoTime() - lastPrint >= print.toNanos()) {
                    out.println(line(current));
                    out.flush();
                    lastPrint = System.nanoTime();
                    printed = true;
                }
            }
            if (over) {
                return current;
            }
            try {
                Thread.sleep(poll);
            } catch (final InterruptedException e) {
                Thread.currentThread().interrupt();
                endBar();
                throw new ApiException(ApiException.NO_ANSWER, "interrupted", "stopped waiting for operation " + id
                    + "; it goes on on the server: nbdtail operation get " + id + " --wait", e);
            }
            try {
                current = api.get("/v1/operations/" + ApiClient.segment(id));
            } catch (final ApiException e) {
                endBar();
                throw e.withHint("operation " + id + " may still be running: nbdtail operation get " + id
                    + " --wait");
            }
        }
    }

    private void draw(final JsonNode operation, final boolean over) {
        final double fraction = fraction(operation);
        final int filled = (int) Math.floor(fraction * BAR);
        final String bar = "[" + "#".repeat(filled) + ".".repeat(BAR - filled) + "] ";
        final String text = name(operation) + " " + bar + details(operation);
        out.print("\r" + text + " ".repeat(Math.max(0, drawn - text.length())));
        drawn = text.length();
        if (over) {
            out.println();
            drawn = 0;
        }
        out.flush();
    }

    /** Ends a bar line before something else is printed. */
    private void endBar() {
        if (terminal && drawn > 0) {
            out.println();
            out.flush();
            drawn = 0;
        }
    }

    /** One plain progress line: {@code scrub vol1: 42% 420 MiB/1.0 GiB 85 MiB/s eta 7s}. */
    static String line(final JsonNode operation) {
        return name(operation) + ": " + details(operation);
    }

    /** {@code scrub vol1}: the kind and the volume. */
    static String name(final JsonNode operation) {
        final String kind = operation.path("kind").asText("operation");
        final JsonNode volume = operation.path("volume");
        return Output.oneLine(kind + (volume.isTextual() ? " " + volume.asText() : ""));
    }

    /** {@code 42% 420 MiB/1.0 GiB 85 MiB/s eta 7s}. */
    static String details(final JsonNode operation) {
        final StringBuilder text = new StringBuilder();
        text.append((int) Math.floor(fraction(operation) * 100)).append('%');
        final JsonNode done = operation.path("bytesDone");
        final JsonNode total = operation.path("bytesTotal");
        if (done.isNumber() && total.isNumber()) {
            final boolean succeeded = "succeeded".equals(operation.path("state").asText());
            text.append(' ').append(Sizes.format(succeeded ? Math.max(done.asLong(), total.asLong()) : done.asLong()))
                .append('/').append(Sizes.format(total.asLong()));
        }
        final JsonNode rate = operation.path("bytesPerSecond");
        if (rate.isNumber()) {
            text.append(' ').append(Sizes.format(rate.asLong())).append("/s");
        }
        final JsonNode eta = operation.path("etaSeconds");
        if (eta.isNumber() && !over(operation)) {
            text.append(" eta ").append(Output.duration(eta.asLong()));
        }
        final String state = operation.path("state").asText();
        if (state.equals("failed") || state.equals("cancelled")) {
            text.append(' ').append(state);
        }
        return text.toString();
    }

    /** Done, 0 to 1: {@code progress}, else from the bytes; 1 once succeeded. */
    private static double fraction(final JsonNode operation) {
        if ("succeeded".equals(operation.path("state").asText())) {
            return 1;
        }
        final JsonNode progress = operation.path("progress");
        if (progress.isNumber()) {
            return Math.clamp(progress.asDouble(), 0.0, 1.0);
        }
        final long total = operation.path("bytesTotal").asLong();
        return total <= 0 ? 0 : Math.clamp((double) operation.path("bytesDone").asLong() / total, 0.0, 1.0);
    }

    /**
     * Reports how an operation that is over ended, and returns the exit code: 0 if it succeeded, else 1 with its
     * error on stderr. With {@code json}, prints the operation's JSON instead of the success line.
     */
    static int finish(final CommandSpec spec, final JsonNode operation, final boolean json) {
        if (json) {
            Output.json(spec.commandLine().getOut(), operation);
        }
        final String state = operation.path("state").asText();
        final String what = name(operation) + " (operation " + operation.path("id").asText() + ")";
        if (state.equals("succeeded")) {
            if (!json) {
                spec.commandLine().getOut().println(what + " succeeded" + took(operation));
                spec.commandLine().getOut().flush();
            }
            return 0;
        }
        final JsonNode error = operation.path("error");
        final PrintWriter err = spec.commandLine().getErr();
        err.println("nbdtail: " + what + (state.equals("cancelled") ? " was cancelled" : " " + state)
            + (error.isTextual() && !error.asText().isBlank() ? ": " + Output.oneLine(error.asText()) : ""));
        err.flush();
        return 1;
    }

    private static String took(final JsonNode operation) {
        try {
            final Instant started = Instant.parse(operation.path("started").asText());
            final Instant finished = Instant.parse(operation.path("finished").asText());
            return " in " + Output.duration(Duration.between(started, finished).toSeconds());
        } catch (final DateTimeParseException e) {
            return "";
        }
    }
}
