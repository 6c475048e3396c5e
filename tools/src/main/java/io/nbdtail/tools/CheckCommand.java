package io.nbdtail.tools;

import io.nbdtail.layer.Checker;
import io.nbdtail.volume.VolumeService;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

import java.io.PrintWriter;
import java.util.concurrent.Callable;

/**
 * {@code nbdtail check VOLUME [--repair]}: the offline consistency check of a volume's layers, modelled on
 * {@code qemu-img check}. Exit codes as qemu-img's: 0 clean, 2 corruption found, 3 leaks found (and not repaired).
 */
@Command(name = "check", mixinStandardHelpOptions = true,
    description = {"Check a volume's snapshot layers for corruption and leaked space (no process may serve it;"
        + " a server that left it out because it needs a check may keep running).",
        "Exit status: 0 clean, 2 corruption, 3 leaked space left (use --repair to free it), 1 the check failed."})
final class CheckCommand implements Callable<Integer> {
    @Spec
    private CommandSpec spec;
    @Mixin
    private DataDirOption dataDir;
    @Parameters(index = "0", paramLabel = "VOLUME")
    private String volume;
    @Option(names = "--repair", description = "Free leaked space and clear the needs-check flag if nothing is"
        + " corrupt. Never changes data that a layer holds.")
    private boolean repair;

    @Override
    public Integer call() throws Exception {
        final VolumeService service = VolumeService.open(dataDir.dataDir());
        // The volume's own lock is enough: a server that does not serve this volume (because it needs a check)
        // may keep running; one that serves it makes the check refuse.
        final Checker.Report report = service.check(volume, repair);
        final PrintWriter out = spec.commandLine().getOut();
        report.corruptions().forEach(c -> out.println("ERROR " + c));
        report.leaks().forEach(l -> out.println("Leaked " + l));
        report.repairs().forEach(r -> out.println("Repaired: " + r));
        report.notes().forEach(n -> out.println("Note: " + n));
        if (!report.corruptions().isEmpty()) {
            out.println(report.corruptions().size() + " error(s) found; the volume is not served until they are"
                + " resolved. Nothing was changed in layers that hold data: restore from a mirror or backup.");
        } else if (!report.leaks().isEmpty()) {
            out.println(report.leakedBytes() + " bytes leaked; run again with --repair to free them.");
        } else {
            out.println("No errors were found on volume " + volume + ".");
        }
        return report.exitCode();
    }
}
