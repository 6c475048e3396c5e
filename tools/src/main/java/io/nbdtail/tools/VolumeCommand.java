package io.nbdtail.tools;

import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.nbdtail.volume.Sizes;
import io.nbdtail.volume.VolumeException;
import io.nbdtail.volume.VolumeInfo;
import io.nbdtail.volume.VolumeMetadata;
import io.nbdtail.volume.VolumeService;
import picocli.CommandLine;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

import java.io.PrintWriter;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

/** {@code nbdtail volume ...}: offline volume management on a data directory that no server is serving. */
@Command(name = "volume", mixinStandardHelpOptions = true, description = "Create, list, inspect and delete volumes.",
    subcommands = {VolumeCommand.Create.class, VolumeCommand.ListVolumes.class, VolumeCommand.Info.class,
        VolumeCommand.Delete.class})
final class VolumeCommand {
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT)
        .disable(JsonGenerator.Feature.AUTO_CLOSE_TARGET);

    private VolumeCommand() {
    }

    @Command(name = "create", mixinStandardHelpOptions = true,
        description = "Create a sparse file volume (--size) or register a block device (--device).")
    static final class Create implements Callable<Integer> {
        @Spec
        private CommandLine.Model.CommandSpec spec;
        @Mixin
        private DataDirOption dataDir;
        @Parameters(index = "0", paramLabel = "NAME", description = "Volume name, also the NBD export name.")
        private String name;
        @ArgGroup(exclusive = true, multiplicity = "1")
        private Source source;
        @Option(names = "--description", paramLabel = "TEXT", description = "Shown to NBD clients in the export list.")
        private String description = "";
        @Option(names = "--read-only", description = "Serve the volume read-only.")
        private boolean readOnly;

        static final class Source {
            @Option(names = "--size", paramLabel = "SIZE", description = "Size of a file volume: 20G, 512M, 1T ...",
                required = true)
            private String size;
            @Option(names = "--device", paramLabel = "PATH", description = "An existing block device to register.",
                required = true)
            private String device;
        }

        @Override
        public Integer call() throws Exception {
            final VolumeService service = VolumeService.open(dataDir.dataDir());
            final long size = source.size != null ? Sizes.parse(source.size) : 0;
            try (AutoCloseable ignored = service.lockDataDirectory()) {
                final VolumeMetadata m = service.create(name, size, source.device, description, readOnly);
                spec.commandLine().getOut().println("created volume " + m.name() + " (" + Sizes.format(m.size())
                    + ", " + kind(m) + ")");
            }
            return 0;
        }
    }

    @Command(name = "list", mixinStandardHelpOptions = true, description = "List the volumes.")
    static final class ListVolumes implements Callable<Integer> {
        @Spec
        private CommandLine.Model.CommandSpec spec;
        @Mixin
        private DataDirOption dataDir;
        @Option(names = "--json", description = "Print JSON for scripts.")
        private boolean json;

        @Override
        public Integer call() throws Exception {
            final VolumeService service = VolumeService.open(dataDir.dataDir());
            final List<VolumeInfo> infos = new ArrayList<>();
            for (final VolumeMetadata m : service.list()) {
                infos.add(service.info(m.name()));
            }
            final PrintWriter out = spec.commandLine().getOut();
            if (json) {
                final ArrayNode array = JSON.createArrayNode();
                infos.forEach(i -> array.add(toJson(i)));
                out.println(JSON.writeValueAsString(array));
                return 0;
            }
            final List<String[]> rows = new ArrayList<>();
            rows.add(new String[] {"NAME", "SIZE", "ALLOCATED", "KIND", "MODE", "DESCRIPTION"});
            for (final VolumeInfo i : infos) {
                final VolumeMetadata m = i.metadata();
                rows.add(new String[] {m.name(), Sizes.format(m.size()), Sizes.format(i.allocatedBytes()), kind(m),
                    m.readOnly() ? "ro" : "rw", m.description()});
            }
            printTable(out, rows);
            return 0;
        }
    }

    @Command(name = "info", mixinStandardHelpOptions = true, description = "Show everything about one volume.")
    static final class Info implements Callable<Integer> {
        @Spec
        private CommandLine.Model.CommandSpec spec;
        @Mixin
        private DataDirOption dataDir;
        @Parameters(index = "0", paramLabel = "NAME")
        private String name;
        @Option(names = "--json", description = "Print JSON for scripts.")
        private boolean json;

        @Override
        public Integer call() throws Exception {
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
            out.println("size:        " + m.size() + " (" + Sizes.format(m.size()) + ")");
            out.println("allocated:   " + i.allocatedBytes() + " (" + Sizes.format(i.allocatedBytes()) + ")");
            out.println("path:        " + i.dataPath());
            out.println("read-only:   " + (m.readOnly() ? "yes" : "no"));
            out.println("description: " + m.description());
            out.println("created:     " + m.created());
            out.println("in use:      " + (i.inUse() ? "yes" : "no"));
            return 0;
        }
    }

    @Command(name = "delete", mixinStandardHelpOptions = true,
        description = "Delete a volume and its data. A registered block device is only unregistered, never erased.")
    static final class Delete implements Callable<Integer> {
        @Spec
        private CommandLine.Model.CommandSpec spec;
        @Mixin
        private DataDirOption dataDir;
        @Parameters(index = "0", paramLabel = "NAME")
        private String name;

        @Override
        public Integer call() throws Exception {
            final VolumeService service = VolumeService.open(dataDir.dataDir());
            try (AutoCloseable ignored = service.lockDataDirectory()) {
                service.delete(name);
            }
            spec.commandLine().getOut().println("deleted volume " + name);
            return 0;
        }
    }

    private static String kind(final VolumeMetadata m) {
        return m.kind() == VolumeMetadata.Kind.FILE ? "file" : "device";
    }

    static ObjectNode toJson(final VolumeInfo i) {
        final VolumeMetadata m = i.metadata();
        final ObjectNode node = JSON.createObjectNode();
        node.put("name", m.name());
        node.put("id", m.id().toString());
        node.put("kind", kind(m));
        node.put("size", m.size());
        node.put("allocated", i.allocatedBytes());
        node.put("path", i.dataPath().toString());
        node.put("readOnly", m.readOnly());
        node.put("description", m.description());
        node.put("created", m.created().toString());
        node.put("inUse", i.inUse());
        return node;
    }

    private static void printTable(final PrintWriter out, final List<String[]> rows) {
        final int[] widths = new int[rows.get(0).length];
        for (final String[] row : rows) {
            for (int c = 0; c < row.length; c++) {
                widths[c] = Math.max(widths[c], row[c].length());
            }
        }
        for (final String[] row : rows) {
            final StringBuilder line = new StringBuilder();
            for (int c = 0; c < row.length; c++) {
                line.append(c == row.length - 1 ? row[c] : String.format("%-" + (widths[c] + 2) + "s", row[c]));
            }
            out.println(line.toString().stripTrailing());
        }
    }
}
