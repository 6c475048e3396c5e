package io.nbdtail.tools.online;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.nbdtail.volume.Sizes;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Set;
import java.util.concurrent.Callable;

/**
 * {@code nbdtail mirror ...}: live mirroring between tails through the control API (see docs/mirroring.md).
 */
@Command(name = "mirror", mixinStandardHelpOptions = true,
    description = {"Move a volume to another tail while it is in use (live mirror and cutover).",
        "On the destination: 'mirror receive'; on the source: 'mirror start', then 'mirror status --wait'."},
    subcommands = {MirrorCommand.Receive.class, MirrorCommand.Start.class, MirrorCommand.Status.class,
        MirrorCommand.Abort.class, MirrorCommand.Rate.class, MirrorCommand.Resolve.class,
        MirrorCommand.Address.class})
public final class MirrorCommand {
    private static final Set<String> OVER = Set.of("moved", "failed", "aborted");

    private static String path(final String name) {
        return "/v1/volumes/" + ApiClient.segment(name) + "/mirror";
    }

    private static String token(final String token, final Path file) throws Exception {
        if (file != null) {
            return Files.readString(file).trim();
        }
        if (token == null) {
            throw new IllegalArgumentException("give the shared secret with --secret-file FILE (or --secret)");
        }
        return token;
    }

    /** {@code receive NAME --size SIZE --token-file F [--source ADDR] [--source-identity ID]}, on the destination. */
    @Command(name = "receive", mixinStandardHelpOptions = true,
        description = "On the destination: create an empty volume that receives NAME from a source tail.")
    static final class Receive implements Callable<Integer> {
        @Spec
        private CommandSpec spec;
        @Mixin
        private ServerOptions server;
        @Parameters(index = "0", paramLabel = "NAME")
        private String name;
        @Option(names = "--size", required = true, paramLabel = "BYTES", converter = SizeConverter.class,
            description = "The source volume's exact size, e.g. 20G.")
        private Long size;
        @Option(names = "--secret-file", paramLabel = "FILE", description = "File with the shared secret (>= 16"
            + " characters) the source must present.")
        private Path tokenFile;
        @Option(names = "--secret", paramLabel = "SECRET", description = "The shared secret itself (visible in ps;"
            + " prefer --secret-file).")
        private String token;
        @Option(names = "--source", paramLabel = "ADDR", description = "Accept the mirror only from this address"
            + " or network (CIDR).")
        private String source;
        @Option(names = "--source-identity", paramLabel = "ID", description = "Accept the mirror only from a source"
            + " that proved this TLS identity: dn:SUBJECT of its client certificate (dn:CN=tail-3,O=Storage) or"
            + " psk:IDENTITY. Needs nbd.tls on this tail.")
        private String sourceIdentity;
        @Option(names = "--json", description = "Print the volume as JSON.")
        private boolean json;

        @Override
        public Integer call() throws Exception {
            final ObjectNode body = ApiClient.object();
            body.put("size", size);
            body.put("token", token(token, tokenFile));
            if (source != null) {
                body.put("source", source);
            }
            if (sourceIdentity != null) {
                body.put("sourceIdentity", sourceIdentity);
            }
            try (ApiClient api = server.connect()) {
                final JsonNode volume = api.post("/v1/volumes/" + ApiClient.segment(name) + "/receive", body);
                final PrintWriter out = spec.commandLine().getOut();
                if (json) {
                    Output.json(out, volume);
                } else {
                    out.println("volume " + name + " (" + Sizes.format(size) + ") is receiving; start the mirror on"
                        + " the source with the same token");
                }
                out.flush();
                return 0;
            }
        }
    }

    /** {@code start NAME --to HOST:PORT --token-file F [--rate R] [--wait]}, on the source. */
    @Command(name = "start", mixinStandardHelpOptions = true,
        description = {"On the source: mirror NAME to the destination tail and hand it over.",
            "Answers once the destination accepted; a refusal or an unreachable destination is final.",
            "The volume's snapshots move with it; until the mirror ends they cannot be taken, deleted or rolled"
                + " back to."})
    static final class Start implements Callable<Integer> {
        @Spec
        private CommandSpec spec;
        @Mixin
        private ServerOptions server;
        @Parameters(index = "0", paramLabel = "NAME")
        private String name;
        @Option(names = "--to", required = true, paramLabel = "HOST:PORT",
            description = "The destination tail's NBD listener.")
        private String destination;
        @Option(names = "--secret-file", paramLabel = "FILE", description = "File with the mirror secret the destination was given.")
        private Path tokenFile;
        @Option(names = "--secret", paramLabel = "SECRET", description = "The mirror secret itself (prefer --secret-file).")
        private String token;
        @Option(names = "--rate", paramLabel = "BYTES/s", converter = SizeConverter.class,
            description = "Copy at most this much per second, e.g. 200M (default: unlimited; change it live with"
                + " 'mirror rate').")
        private Long rate;
        @Option(names = "--wait", description = "Follow the mirror to its end (moved: exit 0; failed or aborted:"
            + " exit 1).")
        private boolean wait;
        @Option(names = "--json", description = "Print the mirror status as JSON.")
        private boolean json;

        @Override
        public Integer call() throws Exception {
            final ObjectNode body = ApiClient.object();
            body.put("destination", destination);
            body.put("token", token(token, tokenFile));
            if (rate != null) {
                body.put("bytesPerSecond", rate);
            }
            try (ApiClient api = server.connect()) {
                final JsonNode status = api.post(path(name), body);
                if (wait) {
                    return follow(spec, api, name, status, json);
                }
                final PrintWriter out = spec.commandLine().getOut();
                if (json) {
                    Output.json(out, status);
                } else {
                    out.println("mirror of " + name + " to " + destination + " started; follow it with: nbdtail"
                        + " mirror status " + name + " --wait");
                }
                out.flush();
                return 0;
            }
        }
    }

    /** {@code status NAME [--wait] [--json]}. */
    @Command(name = "status", mixinStandardHelpOptions = true,
        description = "Show a volume's mirror: state, pass, bytes copied and dirty, rate, ETA, attempts, freeze.")
    static final class Status implements Callable<Integer> {
        @Spec
        private CommandSpec spec;
        @Mixin
        private ServerOptions server;
        @Parameters(index = "0", paramLabel = "NAME")
        private String name;
        @Option(names = "--wait", description = "Follow it to its end with a progress bar; exit 1 unless moved.")
        private boolean wait;
        @Option(names = "--json", description = "Print the status as JSON.")
        private boolean json;

        @Override
        public Integer call() throws Exception {
            try (ApiClient api = server.connect()) {
                final JsonNode status = api.get(path(name));
                if (wait) {
                    return follow(spec, api, name, status, json);
                }
                final PrintWriter out = spec.commandLine().getOut();
                if (json) {
                    Output.json(out, status);
                } else {
                    print(out, status);
                }
                out.flush();
                return 0;
            }
        }
    }

    /** {@code abort NAME}. */
    @Command(name = "abort", mixinStandardHelpOptions = true,
        description = "Abort the mirror; the source stays as it was (refused once the hand-over began).")
    static final class Abort implements Callable<Integer> {
        @Spec
        private CommandSpec spec;
        @Mixin
        private ServerOptions server;
        @Parameters(index = "0", paramLabel = "NAME")
        private String name;

        @Override
        public Integer call() throws Exception {
            try (ApiClient api = server.connect()) {
                final JsonNode status = api.delete(path(name));
                spec.commandLine().getOut().println("mirror of " + name + ": " + status.path("state").asText());
                spec.commandLine().getOut().flush();
                return 0;
            }
        }
    }

    /** {@code rate NAME BYTES/s}. */
    @Command(name = "rate", mixinStandardHelpOptions = true,
        description = "Change a running mirror's rate limit (0: unlimited).")
    static final class Rate implements Callable<Integer> {
        @Spec
        private CommandSpec spec;
        @Mixin
        private ServerOptions server;
        @Parameters(index = "0", paramLabel = "NAME")
        private String name;
        @Parameters(index = "1", paramLabel = "BYTES/s", converter = SizeConverter.class)
        private Long rate;

        @Override
        public Integer call() throws Exception {
            final ObjectNode body = ApiClient.object();
            body.put("bytesPerSecond", rate);
            try (ApiClient api = server.connect()) {
                api.put(path(name) + "/rate", body);
                spec.commandLine().getOut().println("mirror of " + name + ": rate limit "
                    + (rate == 0 ? "off" : Sizes.format(rate) + "/s"));
                spec.commandLine().getOut().flush();
                return 0;
            }
        }
    }

    /** {@code resolve NAME moved|source}. */
    @Command(name = "resolve", mixinStandardHelpOptions = true,
        description = {"Settle a cutover whose outcome is unknown.",
            "Check the destination first: 'moved' if it serves the volume at the new epoch; 'source' only after"
                + " the destination dropped it."})
    static final class Resolve implements Callable<Integer> {
        @Spec
        private CommandSpec spec;
        @Mixin
        private ServerOptions server;
        @Parameters(index = "0", paramLabel = "NAME")
        private String name;
        @Parameters(index = "1", paramLabel = "OUTCOME", description = "moved or source")
        private String outcome;

        @Override
        public Integer call() throws Exception {
            final ObjectNode body = ApiClient.object();
            body.put("outcome", outcome);
            try (ApiClient api = server.connect()) {
                final JsonNode volume = api.post(path(name) + "/resolve", body);
                spec.commandLine().getOut().println("volume " + name + ": " + volume.path("state").asText());
                spec.commandLine().getOut().flush();
                return 0;
            }
        }
    }

    /** {@code address NAME ADDR:PORT|--clear}. */
    @Command(name = "address", mixinStandardHelpOptions = true,
        description = "Give a volume its own service address (ADDR:PORT), which moves with it to a destination.")
    static final class Address implements Callable<Integer> {
        @Spec
        private CommandSpec spec;
        @Mixin
        private ServerOptions server;
        @Parameters(index = "0", paramLabel = "NAME")
        private String name;
        @Parameters(index = "1", arity = "0..1", paramLabel = "ADDR:PORT")
        private String address;
        @Option(names = "--clear", description = "Remove the volume's service address.")
        private boolean clear;

        @Override
        public Integer call() throws Exception {
            if (clear == (address != null)) {
                throw new IllegalArgumentException("give either ADDR:PORT or --clear");
            }
            final ObjectNode body = ApiClient.object();
            body.put("address", address);
            try (ApiClient api = server.connect()) {
                api.put("/v1/volumes/" + ApiClient.segment(name) + "/address", body);
                spec.commandLine().getOut().println("volume " + name + ": service address "
                    + (address == null ? "cleared" : address));
                spec.commandLine().getOut().flush();
                return 0;
            }
        }
    }

    /** Polls until the mirror is over; a bar on a terminal, a line every two seconds otherwise. */
    static int follow(final CommandSpec spec, final ApiClient api, final String name, final JsonNode first,
                      final boolean json) throws Exception {
        final PrintWriter out = spec.commandLine().getOut();
        final boolean terminal = OperationWait.terminal() && !json;
        JsonNode status = first;
        long lastPrint = 0;
        while (true) {
            final boolean over = OVER.contains(status.path("state").asText());
            if (!json) {
                if (terminal) {
                    out.print("\r" + bar(status) + "   ");
                    if (over) {
                        out.println();
                    }
                    out.flush();
                } else if (over || System.nanoTime() - lastPrint >= Duration.ofSeconds(2).toNanos()) {
                    out.println(line(status));
                    out.flush();
                    lastPrint = System.nanoTime();
                }
            }
            if (over) {
                break;
            }
            Thread.sleep(500);
            status = api.get(path(name));
        }
        if (json) {
            Output.json(out, status);
            out.flush();
        }
        final String state = status.path("state").asText();
        if (state.equals("moved")) {
            if (!json) {
                out.println("volume " + name + " moved to " + status.path("destination").asText() + "; guest writes"
                    + " were held for " + status.path("freezeMillis").asLong() + " ms");
                out.flush();
            }
            return 0;
        }
        spec.commandLine().getErr().println("nbdtail: mirror of " + name + " " + state
            + (status.path("lastError").isTextual() ? ": " + Output.oneLine(status.path("lastError").asText()) : ""));
        spec.commandLine().getErr().flush();
        return 1;
    }

    private static String bar(final JsonNode s) {
        final long total = Math.max(1, s.path("bytesTotal").asLong());
        final double done = s.path("state").asText().equals("moved") ? 1
            : Math.clamp(1.0 - (double) s.path("bytesDirty").asLong() / total, 0.0, 1.0);
        final int filled = (int) Math.floor(done * 24);
        return "mirror " + s.path("volume").asText() + " [" + "#".repeat(filled) + ".".repeat(24 - filled) + "] "
            + details(s);
    }

    /** {@code mirror vm1: copying pass 2, 1.2 GiB copied, 40 MiB dirty, 110 MiB/s, eta 1s, attempts 0}. */
    static String line(final JsonNode s) {
        return "mirror " + s.path("volume").asText() + ": " + details(s);
    }

    private static String details(final JsonNode s) {
        final StringBuilder text = new StringBuilder(s.path("state").asText());
        text.append(" pass ").append(s.path("pass").asInt());
        if (s.path("snapshots").asInt() > 0) {
            text.append(", snapshots ").append(s.path("snapshotsSealed").asInt()).append('/')
                .append(s.path("snapshots").asInt());
        }
        text.append(", ").append(Sizes.format(s.path("bytesCopied").asLong())).append(" copied");
        text.append(", ").append(Sizes.format(s.path("bytesDirty").asLong())).append(" dirty");
        text.append(", ").append(Sizes.format(s.path("rate").asLong())).append("/s");
        final long eta = s.path("etaSeconds").asLong(-1);
        if (eta >= 0 && !OVER.contains(s.path("state").asText())) {
            text.append(", eta ").append(Output.duration(eta));
        }
        text.append(", attempts ").append(s.path("attempts").asInt());
        if (!"normal".equals(s.path("convergence").asText("normal"))) {
            text.append(", ").append(s.path("convergence").asText());
        }
        if (s.path("freezeMillis").asLong(-1) >= 0) {
            text.append(", freeze ").append(s.path("freezeMillis").asLong()).append(" ms");
        }
        return text.toString();
    }

    private static void print(final PrintWriter out, final JsonNode s) {
        out.println(line(s));
        out.println("  destination: " + s.path("destination").asText());
        out.println("  total:       " + Sizes.format(s.path("bytesTotal").asLong()));
        out.println("  rate limit:  " + (s.path("rateLimit").asLong() == 0 ? "none"
            : Sizes.format(s.path("rateLimit").asLong()) + "/s"));
        if (s.path("lastError").isTextual()) {
            out.println("  last error:  " + Output.oneLine(s.path("lastError").asText()));
        }
    }
}
