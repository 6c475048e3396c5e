package io.nbdtail.tools;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.nbdtail.tools.online.GrowCommand;
import io.nbdtail.tools.online.OnlineVolume;
import io.nbdtail.tools.online.ScrubCommand;
import io.nbdtail.tools.online.ServerOptions;
import io.nbdtail.volume.Sizes;
import io.nbdtail.volume.VolumeException;
import io.nbdtail.volume.VolumeInfo;
import io.nbdtail.volume.VolumeMetadata;
import io.nbdtail.volume.VolumeService;
import picocli.CommandLine;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.Callable;

/**
 * {@code nbdtail volume ...}: volume management. With a data directory ({@code --data-dir} or
 * {@code $NBDTAIL_DATA_DIR}) the commands work on it directly: {@code create} and {@code delete} take the data
 * directory's lock, so they refuse to run while a server serves it; {@code list} and {@code info} only read and
 * work under a running server too. Without one they go through a running server's control API
 * ({@link OnlineVolume}); {@code grow} and {@code scrub} only exist online.
 */
@Command(name = "volume", mixinStandardHelpOptions = true,
    description = "Create, list, inspect, grow, scrub and delete volumes.",
    subcommands = {VolumeCommand.Create.class, VolumeCommand.ListVolumes.class, VolumeCommand.Info.class,
        VolumeCommand.Delete.class, GrowCommand.class, ScrubCommand.class})
final class VolumeCommand {
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private VolumeCommand() {
    }

    /** {@code volume create NAME --size SIZE | --device PATH [--description TEXT] [--read-only]}. */
    @Command(name = "create", mixinStandardHelpOptions = true,
        description = "Create a sparse file volume (--size) or register a block device (--device).")
    static final class Create implements Callable<Integer> {
        @Spec
        private CommandSpec spec;
        @Mixin
        private DataDirOption dataDir;
        @Mixin
        private ServerOptions server;
        @Parameters(index = "0", paramLabel = "NAME",
            description = "Volume name, also the NBD export name: 1-128 of A-Z a-z 0-9 . _ -")
        private String name;
        @ArgGroup(exclusive = true, multiplicity = "1")
        private Source source;
        @Option(names = "--description", paramLabel = "TEXT", description = "Shown to NBD clients in the export list.")
        private String description = "";
        @Option(names = "--read-only", description = "Serve the volume read-only.")
        private boolean readOnly;

        /** Where the bytes live: exactly one of the two. */
        static final class Source {
            @Option(names = "--size", paramLabel = "SIZE", required = true, converter = SizeConverter.class,
                description = "Size of a sparse file volume: bytes, or 512M, 20G, 2T (powers of 1024).")
            private Long size;
            @Option(names = "--device", paramLabel = "PATH", required = true,
                description = "An existing block device to serve; its size is the volume's size.")
            private String device;
        }

        @Override
        public Integer call() throws Exception {
            if (server.online(dataDir.explicit())) {
                return OnlineVolume.create(spec, server, name, source.size, source.device, description, readOnly);
            }
            final VolumeService service = VolumeService.open(dataDir.dataDir());
            final VolumeMetadata m;
            try (AutoCloseable ignored = lockForChange(service, "create volume '" + name + "'")) {
                m = service.create(name, source.size != null ? source.size : 0, source.device, description,
                    readOnly);
            }
            spec.commandLine().getOut().println("created volume " + m.name() + ": " + Sizes.format(m.size()) + " "
                + kind(m) + (m.readOnly() ? ", read-only" : "") + (m.devicePath() != null ? " on " + m.devicePath()
                : ""));
            return 0;
        }
    }

    /** {@code volume list [--json]}. */
    @Command(name = "list", mixinStandardHelpOptions = true, description = "List the volumes.")
    static final class ListVolumes implements Callable<Integer> {
        @Spec
        private CommandSpec spec;
        @Mixin
        private DataDirOption dataDir;
        @Mixin
        private ServerOptions server;
        @Option(names = "--json", description = "Print a JSON array, for scripts.")
        private boolean json;

        @Override
        public Integer call() throws Exception {
            if (server.online(dataDir.explicit())) {
                return OnlineVolume.list(spec, server, json);
            }
            final VolumeService service = VolumeService.open(dataDir.dataDir());
            final PrintWriter out = spec.commandLine().getOut();
            final List<Row> rows = new ArrayList<>();
            for (final VolumeMetadata m : service.list()) {
                rows.add(Row.of(service, m));
            }
            if (json) {
                final ArrayNode array = JSON.createArrayNode();
                rows.forEach(row -> array.add(row.toJson()));
                out.println(JSON.writeValueAsString(array));
                return 0;
            }
            if (rows.isEmpty()) {
                out.println("no volumes in " + service.dataDir() + "; create one with: nbdtail volume create NAME"
                    + " --size 20G --data-dir " + service.dataDir());
                return 0;
            }
            final List<String[]> table = new ArrayList<>();
            table.add(new String[] {"NAME", "SIZE", "ALLOCATED", "KIND", "READ-ONLY", "DESCRIPTION"});
            for (final Row row : rows) {
                final VolumeMetadata m = row.metadata();
                table.add(new String[] {m.name(), Sizes.format(m.size()),
                    row.info() != null ? Sizes.format(row.info().allocatedBytes()) : "?", kind(m),
                    m.readOnly() ? "yes" : "no", oneLine(m.description())});
                if (row.error() != null) {
                    spec.commandLine().getErr().println("nbdtail: " + row.error());
                }
            }
            io.nbdtail.tools.online.Output.table(out, table);
            return 0;
        }
    }

    /** One volume of the listing; {@code info} is {@code null} if it could not be inspected. */
    private record Row(VolumeMetadata metadata, VolumeInfo info, String error) {
        static Row of(final VolumeService service, final VolumeMetadata m) {
            try {
                return new Row(m, service.info(m.name()), null);
            } catch (final VolumeException e) {
                // Deleted since the listing, or its data is damaged: still list it, and say why it is partial.
                return new Row(m, null, e.getMessage());
            }
        }

        ObjectNode toJson() {
            if (info != null) {
                return VolumeCommand.toJson(info);
            }
            final ObjectNode node = VolumeCommand.toJson(metadata);
            node.putNull("allocated");
            node.putNull("path");
            node.putNull("inUse");
            node.put("error", error);
            return node;
        }
    }

    /** {@code volume info NAME [--json]}. */
    @Command(name = "info", mixinStandardHelpOptions = true, description = "Show everything about one volume.")
    static final class Info implements Callable<Integer> {
        @Spec
        private CommandSpec spec;
        @Mixin
        private DataDirOption dataDir;
        @Mixin
        private ServerOptions server;
        @Parameters(index = "0", paramLabel = "NAME")
        private String name;
        @Option(names = "--json", description = "Print a JSON object, for scripts.")
        private boolean json;

        @Override
        public Integer call() throws Exception {
            if (server.online(dataDir.explicit())) {
                return OnlineVolume.info(spec, server, name, json);
            }
            final VolumeInfo i = VolumeService.open(dataDir.dataDir()).info(name);
            final PrintWriter out = spec.commandLine().getOut();
            if (json) {
                out.println(JSON.writeValueAsString(toJson(i)));
                return 0;
            }
            final VolumeMetadata m = i.metadata();
            out.println("name:        " + m.name());
            out.println("id:          " + m.id());
            out.println("kind:        " + kind(m));
            out.println("size:        " + m.size() + " bytes (" + Sizes.format(m.size()) + ")");
            out.println("allocated:   " + i.allocatedBytes() + " bytes (" + Sizes.format(i.allocatedBytes()) + ")");
            out.println("path:        " + i.dataPath());
            out.println("read-only:   " + (m.readOnly() ? "yes" : "no"));
            out.println("description: " + oneLine(m.description()));
            out.println("created:     " + m.created());
            out.println("in use:      " + (i.inUse() ? "yes" : "no"));
            return 0;
        }
    }

    /** {@code volume delete NAME}. */
    @Command(name = "delete", mixinStandardHelpOptions = true,
        description = "Delete a volume and its data. A registered block device is only unregistered, never erased.")
    static final class Delete implements Callable<Integer> {
        @Spec
        private CommandSpec spec;
        @Mixin
        private DataDirOption dataDir;
        @Mixin
        private ServerOptions server;
        @Parameters(index = "0", paramLabel = "NAME")
        private String name;
        @Option(names = "--force", description = "Online: disconnect connected clients first (without it, the"
            + " server refuses while clients are connected).")
        private boolean force;

        @Override
        public Integer call() throws Exception {
            if (server.online(dataDir.explicit())) {
                return OnlineVolume.delete(spec, server, name, force);
            }
            final VolumeService service = VolumeService.open(dataDir.dataDir());
            final String device;
            try (AutoCloseable ignored = lockForChange(service, "delete volume '" + name + "'")) {
                device = service.list().stream().filter(m -> m.name().equals(name)).map(VolumeMetadata::devicePath)
                    .filter(Objects::nonNull).findFirst().orElse(null);
                service.delete(name);
            }
            spec.commandLine().getOut().println("deleted volume " + name + (device != null ? " (device " + device
                + " was not touched)" : ""));
            return 0;
        }
    }

    /** Parses {@code --size} with {@link Sizes#parse}, so that a malformed size is a usage error (exit 2). */
    static final class SizeConverter implements CommandLine.ITypeConverter<Long> {
        @Override
        public Long convert(final String value) {
            try {
                return Sizes.parse(value);
            } catch (final IllegalArgumentException e) {
                throw new CommandLine.TypeConversionException(e.getMessage());
            }
        }
    }

    /**
     * Takes the data directory lock for a change. Whoever holds it is a server (whose control API makes the
     * change instead) or another volume command (which will be done in a moment).
     */
    static AutoCloseable lockForChange(final VolumeService service, final String action)
        throws VolumeException {
        try {
            return service.lockDataDirectory();
        } catch (final VolumeException e) {
            if (e.code() != VolumeException.Code.LOCKED) {
                throw e;
            }
            throw new VolumeException(VolumeException.Code.LOCKED, "cannot " + action + ": data directory "
                + service.dataDir() + " is locked by nbdtail " + holder(service.dataDir()) + ", a running server or"
                + " another volume command; stop the server or use the server's control API, or retry when the"
                + " other command has finished", e);
        }
    }

    /** "pid N" from {@code DATA/nbdtail.lock}, which is informational only. */
    private static String holder(final Path dataDir) {
        try {
            final String text = Files.readString(dataDir.resolve("nbdtail.lock"), StandardCharsets.US_ASCII).strip();
            if (text.matches("pid=\\d+")) {
                return "pid " + text.substring(4);
            }
        } catch (final IOException e) {
            // Say less rather than fail over it.
        }
        return "(pid unknown)";
    }

    private static String kind(final VolumeMetadata m) {
        return m.kind() == VolumeMetadata.Kind.FILE ? "file" : "device";
    }

    /** The fields of {@code volume info --json}; {@code volume list --json} prints an array of them. */
    static ObjectNode toJson(final VolumeInfo i) {
        final ObjectNode node = toJson(i.metadata());
        node.put("allocated", i.allocatedBytes());
        node.put("path", i.dataPath().toString());
        node.put("inUse", i.inUse());
        return node;
    }

    private static ObjectNode toJson(final VolumeMetadata m) {
        final ObjectNode node = JSON.createObjectNode();
        node.put("name", m.name());
        node.put("id", m.id().toString());
        node.put("kind", m.kind().name());
        node.put("size", m.size());
        node.put("devicePath", m.devicePath());
        node.put("readOnly", m.readOnly());
        node.put("description", m.description());
        node.put("created", m.created().toString());
        return node;
    }

    /** Control characters (a newline in a description) would break the table's lines. */
    private static String oneLine(final String text) {
        return text.replaceAll("\\p{Cntrl}", " ");
    }
}
