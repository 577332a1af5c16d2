/**
 * Runs steps in the order they were queued, whenever each becomes ready. The worker pool finishes
 * a large record after the small records read behind it; holding those back keeps every sink
 * seeing records in the order of the input, as it does with the pool off.
 */
export class OrderedSteps {
  private readonly queue: { run: (() => void) | undefined }[] = [];
  private head = 0;

  get waiting(): number {
    return this.queue.length - this.head;
  }

  /** Runs `step` now if nothing queued before it is still waiting, otherwise after those. */
  now(step: () => void): void {
    if (this.waiting === 0) {
      step();
      return;
    }
    this.queue.push({ run: step });
  }

  /** Keeps a place in the order; the returned function gives the step that fills it. */
  reserve(): (step: () => void) => void {
    const slot: { run: (() => void) | undefined } = { run: undefined };
    this.queue.push(slot);
    return (step) => {
      slot.run = step;
      this.flush();
    };
  }

  private flush(): void {
    while (this.head < this.queue.length) {
      const slot = this.queue[this.head]!;
      if (!slot.run) break;
      this.head++;
      slot.run();
    }
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    } else if (this.head > 1024) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
  }
}
